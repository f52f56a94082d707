// The DPDK backend as a run-time module: the contract between the port
// factory (ports/, which dlopens the module) and dpdk/ (which builds it).
//
// Why a module: Debian's DPDK is built for SSE4.2 CPUs and its libraries run
// code while they load, so a program linked against them dies with SIGILL on a
// baseline x86-64 CPU even when it never opens a DPDK port. Programs link no
// DPDK library; the factory loads this module (and through it librte_*) only
// when a "dpdk:" spec is opened, after checking the CPU.
//
// The module exports exactly one symbol, kPortModuleEntry, an extern "C"
// function returning a pointer to a static PortModuleV1. The table carries C++
// types (io::Port, io::PortOptions, Result), so the loader and the module must
// be built against the same headers: build_id (HYPERSCSI_PORT_MODULE_BUILD_ID,
// set by CMake) holds the project version and a hash of this header,
// dpdk_port.h, io's port.h and packet.h and proto's result.h, and the loader
// refuses a module whose build_id differs from its own. A change to
// the table itself gets a new struct and a new entry name (..._v2).
//
// Thread-safety: the entry point and open() may be called from any thread;
// open() behaves as dpdk::open_dpdk_port (see dpdk_port.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "hyperscsi/io/port.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::dpdk {

// The module's file name; installed in LIBDIR/hyperscsi/, found through the
// programs' RUNPATH (see cmake/Install.cmake) unless HYPERSCSI_DPDK_MODULE names it.
inline constexpr char kPortModuleFile[] = "hyperscsi-dpdk-port.so";
inline constexpr char kPortModuleEntry[] = "hyperscsi_port_module_v1";

struct PortModuleV1 {
  uint32_t size = sizeof(PortModuleV1);
  const char* build_id = nullptr;  // HYPERSCSI_PORT_MODULE_BUILD_ID of the module's build
  // Opens a port from what follows "dpdk:" in the spec. Never throws.
  Result<std::unique_ptr<io::Port>, io::PortError> (*open)(
      std::string_view eal_args, const io::PortOptions& options) = nullptr;
};

using PortModuleEntryV1 = const PortModuleV1* (*)();

}  // namespace hyperscsi::dpdk
