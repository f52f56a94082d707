// Fuzzes the target daemon's configuration parsers. Invariants: a TOML text
// either parses into a config that also passes validate() (and whose LUNs
// survive the --lun flag syntax), or fails with a message naming its origin;
// parse_lun_flag either yields a LUN in range with a store, or an error.
#include <cstdint>
#include <string>
#include <string_view>

#include "config.h"
#include "fuzz_check.h"
#include "hyperscsi/scsi/lun_map.h"

namespace hd = hyperscsi::daemon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string origin = "fuzz.toml";

  auto c = hd::parse_config(text, origin);
  if (!c) {
    FUZZ_CHECK(c.error().message.rfind(origin, 0) == 0, "a config error does not name its origin");
    FUZZ_CHECK(c.error().message.size() > origin.size() + 2, "a config error says nothing");
  } else {
    FUZZ_CHECK(hd::validate(*c).ok(), "a parsed config does not validate");
    FUZZ_CHECK(!c->ports.empty() && !c->luns.empty(), "a parsed config lacks ports or LUNs");
    for (const hd::LunSetting& l : c->luns) {
      auto flag = hd::parse_lun_flag(std::to_string(l.number) + "=" + l.store, l.block_size);
      FUZZ_CHECK(flag.ok(), "a configured LUN cannot be given as --lun");
      FUZZ_CHECK(flag->number == l.number && flag->store == l.store,
                 "--lun reads a configured LUN differently");
    }
  }

  auto l = hd::parse_lun_flag(text, 512);
  if (l) {
    FUZZ_CHECK(l->number <= hyperscsi::scsi::kMaxLun, "--lun accepted a LUN out of range");
    FUZZ_CHECK(!l->store.empty(), "--lun accepted an empty store");
    FUZZ_CHECK(l->block_size == 512, "--lun changed the block size");
  } else {
    FUZZ_CHECK(!l.error().message.empty(), "a --lun error says nothing");
  }
  return 0;
}
