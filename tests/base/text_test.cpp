// base's text helpers: MAC addresses and JSON string escaping.
#include <gtest/gtest.h>

#include "hyperscsi/base/json.h"
#include "hyperscsi/base/mac.h"

namespace {

using namespace hyperscsi::base;

TEST(Mac, FormatsLowerCaseColonSeparatedAndParsesItBack) {
  const MacAddress mac{0x02, 0x00, 0x5e, 0xAB, 0x0c, 0xff};
  EXPECT_EQ(format_mac(mac), "02:00:5e:ab:0c:ff");
  EXPECT_EQ(parse_mac(format_mac(mac)), mac);
  EXPECT_EQ(parse_mac("02-00-5E-AB-0C-FF"), mac);
}

TEST(Mac, RefusesMalformedText) {
  for (const char* bad : {"", "02:00:5e:ab:0c", "02:00:5e:ab:0c:ff:", "02:00:5e:ab:0c:fg",
                          "02.00.5e.ab.0c.ff", "2:00:5e:ab:0c:fff"})
    EXPECT_FALSE(parse_mac(bad).has_value()) << bad;
}

TEST(Json, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(json_escape("plain iqn.2026-01.x:y"), "plain iqn.2026-01.x:y");
  EXPECT_EQ(json_escape("a\"b\\c"), "a\\\"b\\\\c");
  EXPECT_EQ(json_escape("l1\nl2"), "l1\\nl2");
  EXPECT_EQ(json_escape(std::string("\x01\t\x1f", 3)), "\\u0001\\u0009\\u001f");
  EXPECT_EQ(json_escape("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 passes through
}

}  // namespace
