#include "hyperscsi/base/secret_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hyperscsi::base {

namespace {

Unexpected<SecretFileError> fail(SecretFileErrorKind kind, std::string message) {
  return Unexpected(SecretFileError{kind, std::move(message)});
}

}  // namespace

Result<SecretBytes, SecretFileError> read_secret_file(const std::string& path, size_t min_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(SecretFileErrorKind::kCannotOpen,
                "cannot read secret file '" + path + "': " + std::strerror(errno));
  // Two bytes beyond the limit: room for a trailing newline and one byte that
  // tells a too-large file from one exactly at the limit.
  SecretBytes buffer(kMaxSecretFileSize + 2);
  size_t n = 0;
  while (n < buffer.size()) {
    const ssize_t r = ::read(fd, buffer.span().data() + n, buffer.size() - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      return fail(SecretFileErrorKind::kCannotRead,
                  "cannot read secret file '" + path + "': " + std::strerror(err));
    }
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  if (n > 0 && buffer.span()[n - 1] == '\n') --n;
  if (n > kMaxSecretFileSize)
    return fail(SecretFileErrorKind::kTooLarge, "secret file '" + path + "' is larger than " +
                                                    std::to_string(kMaxSecretFileSize) + " bytes");
  if (n < min_size)
    return fail(SecretFileErrorKind::kTooSmall, "secret file '" + path + "' holds fewer than " +
                                                    std::to_string(min_size) + " bytes");
  return SecretBytes(std::span<const uint8_t>(buffer.span().first(n)));
}

}  // namespace hyperscsi::base
