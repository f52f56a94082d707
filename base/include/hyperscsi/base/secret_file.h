// Reading a shared secret from a file (the target's [[initiator]]
// secret_file, the initiator's --secret-file). The bytes go straight from the
// file into wiped memory: no stream or string buffer holds a copy, on success
// or on any error.
// Thread-safety: read_secret_file is thread-safe.
#pragma once

#include <cstddef>
#include <string>

#include "hyperscsi/base/result.h"
#include "hyperscsi/base/secret.h"

namespace hyperscsi::base {

inline constexpr size_t kMaxSecretFileSize = 4096;

enum class SecretFileErrorKind {
  kCannotOpen,  // missing, unreadable (permissions)
  kCannotRead,  // read(2) failed, e.g. a directory
  kTooLarge,    // more than kMaxSecretFileSize bytes
  kTooSmall,    // fewer than the caller's minimum (an empty file)
};
struct SecretFileError {
  SecretFileErrorKind kind{};
  std::string message;  // names the file and the reason
};

// The file's bytes with one trailing newline removed; between `min_size` and
// kMaxSecretFileSize bytes. The file's mode is not checked (the callers
// document that keeping it private is the operator's job).
Result<SecretBytes, SecretFileError> read_secret_file(const std::string& path, size_t min_size);

}  // namespace hyperscsi::base
