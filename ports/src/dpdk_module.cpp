#include "dpdk_module.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "cpu_check.h"
#include "hyperscsi/dpdk/port_module.h"

namespace hyperscsi::ports {
namespace {

// Names the module file instead of the search through the program's RUNPATH
// (tests, unusual installs). Ignored in setuid programs (secure_getenv).
constexpr char kModuleEnv[] = "HYPERSCSI_DPDK_MODULE";

io::PortError unavailable(std::string message) {
  return {io::PortErrorKind::kUnavailable, "dpdk: " + std::move(message)};
}

// The file the dynamic loader picked, for messages.
std::string loaded_path(void* handle, const std::string& fallback) {
  link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr &&
      map->l_name[0] != '\0')
    return map->l_name;
  return fallback;
}

Result<const dpdk::PortModuleV1*, io::PortError> load_module_locked() {
  // Before dlopen: loading the DPDK libraries runs their constructors, which
  // are compiled for corei7 and would die with SIGILL on an older CPU.
  const std::string missing = missing_dpdk_cpu_features(read_cpuid());
  if (!missing.empty())
    return Unexpected(unavailable(
        "this CPU lacks " + missing +
        ", which the DPDK libraries are compiled for (x86-64 with SSE4.2, -march=corei7); DPDK "
        "ports cannot run on it (afpacket:IFACE and pcap:IFACE can)"));

  const char* env = secure_getenv(kModuleEnv);
  const bool named = env != nullptr && env[0] != '\0';
  const std::string file = named ? std::string(env) : std::string(dpdk::kPortModuleFile);
  dlerror();
  // RTLD_LOCAL: nothing of the module (or DPDK) joins the program's symbol
  // scope. Never closed: the EAL, once initialised, lives until exit.
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    const std::string why = err != nullptr ? err : "unknown error";
    if (!named && why.starts_with(file + ":") && why.find("No such file") != std::string::npos)
      return Unexpected(unavailable("the DPDK backend is not installed (no " + file +
                                    " in PREFIX/" HYPERSCSI_DPDK_MODULE_DIR
                                    "/ beside this program): install "
                                    "the hyperscsi-dpdk package, or set " +
                                    std::string(kModuleEnv) + " to the module's path"));
    return Unexpected(unavailable("cannot load the DPDK module " + file +
                                  (named ? std::string(" (named by ") + kModuleEnv + ")" : "") +
                                  ": " + why));
  }
  const std::string where = loaded_path(handle, file);
  auto entry = reinterpret_cast<dpdk::PortModuleEntryV1>(dlsym(handle, dpdk::kPortModuleEntry));
  if (entry == nullptr)
    return Unexpected(unavailable(where + " is not a HyperSCSI DPDK module (it has no " +
                                  dpdk::kPortModuleEntry + ")"));
  const dpdk::PortModuleV1* table = entry();
  if (table == nullptr || table->size != sizeof(dpdk::PortModuleV1) || table->build_id == nullptr ||
      table->open == nullptr)
    return Unexpected(unavailable(where + ": malformed module table"));
  if (std::string_view(table->build_id) != HYPERSCSI_PORT_MODULE_BUILD_ID)
    return Unexpected(unavailable(where + " comes from another build (module " + table->build_id +
                                  ", this program " + HYPERSCSI_PORT_MODULE_BUILD_ID +
                                  "); install the hyperscsi-dpdk package of this version"));
  return table;
}

Result<const dpdk::PortModuleV1*, io::PortError> load_module() {
  static std::mutex mutex;
  static const dpdk::PortModuleV1* loaded = nullptr;
  std::lock_guard lock(mutex);
  if (loaded != nullptr) return loaded;
  auto table = load_module_locked();
  if (table) loaded = table.value();
  return table;
}

}  // namespace

Result<std::unique_ptr<io::Port>, io::PortError> open_dpdk_module_port(
    std::string_view eal_args, const io::PortOptions& options) {
  auto module = load_module();
  if (!module) return Unexpected(module.error());
  return module.value()->open(eal_args, options);
}

}  // namespace hyperscsi::ports
