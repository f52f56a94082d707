// Memory for secrets (keys, shared secrets read from files): wiped with
// OPENSSL_cleanse when destroyed, reassigned or wiped explicitly.
// Thread-safety: a plain value type; cleanse() is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace hyperscsi::base {

// A byte buffer for secrets: wiped on destruction and on reassignment.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t n) : bytes_(n, 0) {}
  explicit SecretBytes(std::span<const uint8_t> b) : bytes_(b.begin(), b.end()) {}
  SecretBytes(const SecretBytes& o) : bytes_(o.bytes_) {}
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(const SecretBytes& o);
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  ~SecretBytes();
  std::span<uint8_t> span() { return bytes_; }
  std::span<const uint8_t> span() const { return bytes_; }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  void wipe();

 private:
  std::vector<uint8_t> bytes_;
};

// Overwrites `bytes` with zeros in a way the compiler does not elide.
void cleanse(std::span<uint8_t> bytes);

}  // namespace hyperscsi::base
