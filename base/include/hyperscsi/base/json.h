// JSON string escaping for the hand-written JSON the programs print (the
// target's control socket, hyperscsi-attach --json).
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <string_view>

namespace hyperscsi::base {

// `s` escaped for use between JSON double quotes: '"', '\\', newline and the
// other control characters (as \u00XX). Bytes >= 0x80 pass unchanged.
std::string json_escape(std::string_view s);

}  // namespace hyperscsi::base
