// Run-time store modules: a backing store that needs a large library (the
// rbd: store and librbd/librados) is built as a shared object of its own and
// loaded with dlopen() the first time a LUN asks for it, so a program that
// serves no such LUN never loads the library, and the target's package does
// not depend on it (the module ships in hyperscsi-target-rbd).
//
// The contract between program and module is one C symbol,
// hyperscsi_store_module_<name>(), returning a StoreModule table. The table
// carries the ABI number and the build tag (the project version and a hash
// of the headers the two sides share: this one and block_store.h, with the
// compiler and sanitizers); the loader refuses a module whose tag differs,
// because StoreOptions and BlockStore cross the boundary as C++ types.
//
// Where modules are looked for, in this order:
//   $HYPERSCSI_STORE_MODULE_DIR, when set (tests, unusual layouts; ignored
//     in setuid programs);
//   the build tree's module directory, when the running program itself lives
//     in that build tree (so a build never picks up an installed module);
//   otherwise <program dir>/../<libdir>/hyperscsi, the installed layout
//     (/usr/sbin/hyperscsi-target -> /usr/lib/<multiarch>/hyperscsi/).
// A loaded module stays loaded until the process exits (stores it made may
// live that long; librados does not support being unloaded).
//
// Thread-safety: open_module_store may be called from any thread (loading is
// serialised by a mutex); the stores it returns follow BlockStore's rules.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "hyperscsi/store/block_store.h"

namespace hyperscsi::store {

inline constexpr std::uint32_t kStoreModuleAbi = 1;

struct StoreModule {
  std::uint32_t abi;      // kStoreModuleAbi
  const char* build_tag;  // HYPERSCSI_STORE_BUILD_TAG of the build that made the module
  const char* name;       // "rbd"
  // The backend library found at run time, e.g. "librbd 1.16.0" (for messages).
  const char* (*backend_version)();
  // Opens `spec` (the whole spec, "rbd:pool/image"). Success: a store the
  // caller owns (deleting it through BlockStore's virtual destructor runs the
  // module's code). Failure: nullptr and *error filled in.
  BlockStore* (*open)(std::string_view spec, const StoreOptions& options, StoreError* error);
};

// The entry point's name for module `name`: "hyperscsi_store_module_" + name.
std::string store_module_symbol(std::string_view name);
// The file the loader would try for module `name` (for messages and tests).
std::string store_module_path(std::string_view name);

// Loads module `name` (once) and opens `spec` with it. A missing module,
// a module that cannot be loaded (its library not installed) or one from
// another build gives StoreError::Kind::kModuleMissing naming the file, the
// reason and what to install.
Result<std::unique_ptr<BlockStore>, StoreError> open_module_store(std::string_view name,
                                                                  std::string_view spec,
                                                                  const StoreOptions& options);

}  // namespace hyperscsi::store

// Each module defines exactly this, with its name in place of NAME:
//   extern "C" HYPERSCSI_STORE_MODULE_EXPORT
//   const hyperscsi::store::StoreModule* hyperscsi_store_module_NAME();
#define HYPERSCSI_STORE_MODULE_EXPORT __attribute__((visibility("default")))
