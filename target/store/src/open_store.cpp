#include "hyperscsi/store/block_store.h"
#include "hyperscsi/store/ram_store.h"
#include "hyperscsi/store/uring_store.h"
#include "store_module.h"

namespace hyperscsi::store {

Result<std::uint64_t, StoreError> parse_size(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Unexpected(StoreError{StoreError::Kind::kBadSpec,
                                 "bad size \"" + std::string(text) + "\": " + std::string(why)});
  };
  if (text.empty()) return bad("empty");
  if (text.size() > 32) return bad("too long");
  std::uint64_t value = 0;
  std::size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    const std::uint64_t digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (UINT64_MAX - digit) / 10) return bad("too large");
    value = value * 10 + digit;
  }
  if (i == 0) return bad("no digits");
  unsigned shift = 0;
  if (i < text.size()) {
    switch (text[i]) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      default:
        return bad("unknown suffix (use K, M, G or T)");
    }
    ++i;
    if (i < text.size() && (text[i] == 'i' || text[i] == 'I')) ++i;
    if (i < text.size() && (text[i] == 'b' || text[i] == 'B')) ++i;
    if (i != text.size()) return bad("trailing characters");
  }
  if (shift > 0 && value > (UINT64_MAX >> shift)) return bad("too large");
  value <<= shift;
  if (value == 0) return bad("zero");
  return value;
}

Result<std::unique_ptr<BlockStore>, StoreError> open_store(std::string_view spec,
                                                           const StoreOptions& options) {
  if (spec.empty()) {
    return Unexpected(StoreError{StoreError::Kind::kBadSpec, "empty store spec"});
  }
  if (spec.substr(0, 4) == "ram:") {
    auto size = parse_size(spec.substr(4));
    if (!size) {
      return Unexpected(
          StoreError{StoreError::Kind::kBadSpec, std::string(spec) + ": " + size.error().message});
    }
    auto ram = RamStore::create(*size, options.block_size, options.read_only);
    if (!ram) return Unexpected(ram.error());
    return std::unique_ptr<BlockStore>(std::move(ram).value());
  }
  if (spec.substr(0, 4) == "rbd:") return open_module_store("rbd", spec, options);
  return open_uring_store(spec, options);
}

}  // namespace hyperscsi::store
