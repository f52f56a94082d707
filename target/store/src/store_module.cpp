#include "store_module.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

// Set by target/CMakeLists.txt.
#ifndef HYPERSCSI_STORE_BUILD_TAG
#error "HYPERSCSI_STORE_BUILD_TAG must be defined"
#endif
#ifndef HYPERSCSI_BUILD_DIR
#error "HYPERSCSI_BUILD_DIR must be defined"
#endif
#ifndef HYPERSCSI_BUILD_MODULE_DIR
#error "HYPERSCSI_BUILD_MODULE_DIR must be defined"
#endif
#ifndef HYPERSCSI_MODULE_SUBDIR
#error "HYPERSCSI_MODULE_SUBDIR must be defined"
#endif

namespace hyperscsi::store {
namespace {

std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::string parent(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::string module_dir() {
  // Not in setuid programs (secure_getenv): no loading code from a caller-chosen dir.
  if (const char* env = ::secure_getenv("HYPERSCSI_STORE_MODULE_DIR"); env && *env) return env;
  const std::string exe = self_exe();
  const std::string build = HYPERSCSI_BUILD_DIR "/";
  if (exe.compare(0, build.size(), build) == 0) return HYPERSCSI_BUILD_MODULE_DIR;
  // <prefix>/sbin/hyperscsi-target or <prefix>/bin/... -> <prefix>/<libdir>/hyperscsi
  return parent(parent(exe)) + "/" HYPERSCSI_MODULE_SUBDIR;
}

const char* package_for(std::string_view name) {
  return name == "rbd" ? "hyperscsi-target-rbd (it brings librbd1 and librados2)"
                       : "the package with this store module";
}

struct Loaded {
  const StoreModule* module = nullptr;
};

std::mutex g_mu;
std::map<std::string, Loaded, std::less<>> g_loaded;  // never unloaded

Result<const StoreModule*, std::string> load(std::string_view name) {
  std::lock_guard lock(g_mu);
  if (auto it = g_loaded.find(name); it != g_loaded.end()) return it->second.module;
  const std::string path = store_module_path(name);
  if (::access(path.c_str(), R_OK) != 0) {
    const int e = errno;
    return Unexpected("the " + std::string(name) + " store module is not installed (" + path +
                      ": " + std::strerror(e) + "); install " + package_for(name));
  }
  ::dlerror();
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = ::dlerror();
    return Unexpected("cannot load the " + std::string(name) +
                      " store module: " + (why ? why : "dlopen failed") +
                      " (is its library installed? install " + package_for(name) + ")");
  }
  const std::string symbol = store_module_symbol(name);
  using Entry = const StoreModule* (*)();
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, symbol.c_str()));
  const StoreModule* m = entry ? entry() : nullptr;
  std::string problem;
  if (!m) {
    problem = "has no " + symbol + "()";
  } else if (m->abi != kStoreModuleAbi) {
    problem = "speaks module ABI " + std::to_string(m->abi) + ", this program " +
              std::to_string(kStoreModuleAbi);
  } else if (!m->build_tag || std::strcmp(m->build_tag, HYPERSCSI_STORE_BUILD_TAG) != 0) {
    problem = std::string("comes from another build (") + (m->build_tag ? m->build_tag : "?") +
              ", this program " HYPERSCSI_STORE_BUILD_TAG ")";
  } else if (!m->open || !m->name || name != m->name) {
    problem = "is not the " + std::string(name) + " store";
  }
  if (!problem.empty()) {
    ::dlclose(handle);
    return Unexpected(path + " " + problem + "; install the module of the same version as " +
                      "hyperscsi-target");
  }
  g_loaded.emplace(std::string(name), Loaded{m});
  return m;
}

}  // namespace

std::string store_module_symbol(std::string_view name) {
  return "hyperscsi_store_module_" + std::string(name);
}

std::string store_module_path(std::string_view name) {
  return module_dir() + "/hyperscsi-store-" + std::string(name) + ".so";
}

Result<std::unique_ptr<BlockStore>, StoreError> open_module_store(std::string_view name,
                                                                  std::string_view spec,
                                                                  const StoreOptions& options) {
  auto m = load(name);
  if (!m) {
    return Unexpected(
        StoreError{StoreError::Kind::kModuleMissing, std::string(spec) + ": " + m.error()});
  }
  StoreError error;
  BlockStore* store = m.value()->open(spec, options, &error);
  if (!store) return Unexpected(std::move(error));
  return std::unique_ptr<BlockStore>(store);
}

}  // namespace hyperscsi::store
