// The "dpdk:" backend of open_port: the CPU check, the loader's refusals (no
// module, not a module, a module from another build) and, where the module is
// built, that DPDK enters the process only when a "dpdk:" spec is opened.
//
// Every open runs in a forked child: a loaded module stays for the life of a
// process, so the test process itself never loads one.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "cpu_check.h"  // ports/src
#include "hyperscsi/ports/open_port.h"

namespace hyperscsi::ports {
namespace {

// Runs `fn` in a forked child and returns what it returned (empty if the child died).
std::string in_child(const std::function<std::string()>& fn) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const std::string out = fn();
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::_exit(0);  // no atexit handlers: the child only reports
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return "child died: status " + std::to_string(status);
  return out;
}

// "KIND|message" of opening `spec`, or "ok" (the port is closed again).
std::string open_result(const std::string& spec) {
  auto r = open_port(spec);
  if (r) return "ok";
  return std::string(io::to_string(r.error().kind)) + "|" + r.error().message;
}

std::string with_env(const char* value, const std::string& spec) {
  if (value != nullptr)
    ::setenv("HYPERSCSI_DPDK_MODULE", value, 1);
  else
    ::unsetenv("HYPERSCSI_DPDK_MODULE");
  return open_result(spec);
}

const std::string kUnavailable(io::to_string(io::PortErrorKind::kUnavailable));

TEST(CpuCheck, Corei7HasEverythingDpdkNeeds) {
  // cpuid(1).ecx and cpuid(0x80000001).ecx of a Nehalem (Core i7 920).
  EXPECT_EQ(missing_dpdk_cpu_features({.leaf1_ecx = 0x0098e3bd, .ext1_ecx = 0x00000001}), "");
}

TEST(CpuCheck, Qemu64LacksSse42AndFriends) {
  // QEMU's default x86-64 model: SSE3, CX16 (+ the hypervisor bit); LAHF_LM, ABM, SSE4A.
  const CpuidBits qemu64{.leaf1_ecx = (1u << 0) | (1u << 13) | (1u << 31),
                         .ext1_ecx = (1u << 0) | (1u << 5) | (1u << 6)};
  EXPECT_EQ(missing_dpdk_cpu_features(qemu64), "SSSE3 SSE4.1 SSE4.2 POPCNT");
  EXPECT_EQ(missing_dpdk_cpu_features({}), "SSE3 SSSE3 CX16 SSE4.1 SSE4.2 POPCNT LAHF-SAHF");
}

TEST(DpdkModule, AMissingModuleFileIsUnavailableAndNamed) {
  const std::string r = in_child(
      [] { return with_env("/nonexistent/hyperscsi-dpdk-port.so", "dpdk:--no-huge,--no-pci"); });
  if (!missing_dpdk_cpu_features(read_cpuid()).empty()) GTEST_SKIP() << "this CPU cannot run DPDK";
  EXPECT_TRUE(r.starts_with(kUnavailable + "|dpdk: cannot load the DPDK module")) << r;
  EXPECT_NE(r.find("/nonexistent/hyperscsi-dpdk-port.so"), std::string::npos) << r;
  EXPECT_NE(r.find("HYPERSCSI_DPDK_MODULE"), std::string::npos) << r;
}

TEST(DpdkModule, ASharedObjectWithoutTheEntryPointIsRefused) {
  const std::string r = in_child([] { return with_env(FAKE_NO_ENTRY, "dpdk:--no-huge"); });
  if (!missing_dpdk_cpu_features(read_cpuid()).empty()) GTEST_SKIP() << "this CPU cannot run DPDK";
  EXPECT_TRUE(r.starts_with(kUnavailable + "|")) << r;
  EXPECT_NE(r.find("is not a HyperSCSI DPDK module (it has no hyperscsi_port_module_v1)"),
            std::string::npos)
      << r;
}

TEST(DpdkModule, AModuleFromAnotherBuildIsRefusedBeforeItsOpenRuns) {
  const std::string r = in_child([] { return with_env(FAKE_OTHER_BUILD, "dpdk:--no-huge"); });
  if (!missing_dpdk_cpu_features(read_cpuid()).empty()) GTEST_SKIP() << "this CPU cannot run DPDK";
  EXPECT_TRUE(r.starts_with(kUnavailable + "|")) << r;
  EXPECT_NE(r.find("comes from another build (module 0.0.0+io.another, this program " +
                   std::string(HYPERSCSI_PORT_MODULE_BUILD_ID) + ")"),
            std::string::npos)
      << r;
  EXPECT_EQ(r.find("fake module's open() was called"), std::string::npos) << r;
}

#ifdef DPDK_MODULE
// The lines of /proc/self/maps that mention `what`, joined.
std::string mapped(const std::string& what) {
  std::ifstream maps("/proc/self/maps");
  std::string line, hits;
  while (std::getline(maps, line))
    if (line.find(what) != std::string::npos) hits += line + "\n";
  return hits;
}

// The program links no DPDK; the module (found through the build tree's
// RUNPATH, or named by HYPERSCSI_DPDK_MODULE) brings librte_* in on the first
// "dpdk:" spec and answers it. "--hs-mtu=1" is refused by the module's own
// parser, before the EAL starts, so this needs neither root nor hugepages.
TEST(DpdkModule, DpdkEntersTheProcessOnlyWithADpdkSpec) {
  if (!missing_dpdk_cpu_features(read_cpuid()).empty())
    GTEST_SKIP() << "this CPU lacks " << missing_dpdk_cpu_features(read_cpuid());
  for (const char* env : {static_cast<const char*>(nullptr), DPDK_MODULE}) {
    const std::string r = in_child([env] {
      std::ostringstream out;
      out << "before:" << mapped("librte_") << mapped("hyperscsi-dpdk-port") << ";";
      out << "mem:" << open_result("mem:dpdkmoduletest") << ";";
      out << "after-mem:" << mapped("librte_") << ";";
      out << "dpdk:" << with_env(env, "dpdk:--no-huge,--hs-mtu=1") << ";";
      out << "after-dpdk:" << (mapped("librte_eal").empty() ? "no-eal" : "eal") << ","
          << (mapped("hyperscsi-dpdk-port.so").empty() ? "no-module" : "module") << ";";
      return out.str();
    });
    SCOPED_TRACE(env != nullptr ? env : "RUNPATH");
    EXPECT_NE(r.find("before:;"), std::string::npos) << r;
    EXPECT_NE(r.find("mem:ok;after-mem:;"), std::string::npos) << r;
    EXPECT_NE(r.find("dpdk:bad spec|dpdk: bad --hs-mtu value '1' (68..65000);"), std::string::npos)
        << r;
    EXPECT_NE(r.find("after-dpdk:eal,module;"), std::string::npos) << r;
  }
}
#else
// Without a module in reach (a build without DPDK), the message says what to install.
TEST(DpdkModule, WithoutTheModuleTheMessageNamesThePackage) {
  const std::string r = in_child([] { return with_env(nullptr, "dpdk:--no-huge"); });
  if (!missing_dpdk_cpu_features(read_cpuid()).empty()) GTEST_SKIP() << "this CPU cannot run DPDK";
  EXPECT_TRUE(r.starts_with(kUnavailable + "|dpdk: the DPDK backend is not installed")) << r;
  EXPECT_NE(r.find("install the hyperscsi-dpdk package"), std::string::npos) << r;
}
#endif

// On a CPU without SSE4.2 the loader refuses before dlopen (checked by hand in
// a -cpu qemu64 VM, see docs); here: a spec is refused with the CPU message
// exactly when this CPU lacks a feature.
TEST(DpdkModule, TheCpuIsCheckedBeforeLoading) {
  const std::string missing = missing_dpdk_cpu_features(read_cpuid());
  const std::string r = in_child([] { return with_env(FAKE_OTHER_BUILD, "dpdk:--no-huge"); });
  EXPECT_EQ(r.find("this CPU lacks") != std::string::npos, !missing.empty()) << r;
}

}  // namespace
}  // namespace hyperscsi::ports
