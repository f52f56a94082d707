#include "hyperscsi/base/secret.h"

#include <openssl/crypto.h>

#include <utility>

namespace hyperscsi::base {

SecretBytes::SecretBytes(SecretBytes&& o) noexcept : bytes_(std::move(o.bytes_)) {
  o.bytes_.clear();
}
SecretBytes& SecretBytes::operator=(const SecretBytes& o) {
  if (this != &o) {
    wipe();
    bytes_ = o.bytes_;
  }
  return *this;
}
SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    wipe();
    bytes_ = std::move(o.bytes_);
    o.bytes_.clear();
  }
  return *this;
}
SecretBytes::~SecretBytes() {
  wipe();
}
void SecretBytes::wipe() {
  if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
  bytes_.clear();
}

void cleanse(std::span<uint8_t> bytes) {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

}  // namespace hyperscsi::base
