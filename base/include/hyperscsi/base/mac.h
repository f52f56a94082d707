// MAC addresses as text: "02:00:5e:10:00:01". One spelling for logs, the
// control socket's JSON, configuration files and command lines.
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hyperscsi::base {

using MacAddress = std::array<uint8_t, 6>;

// Lower-case hex, ':' separated.
std::string format_mac(const MacAddress& mac);
// Exactly six two-digit hex groups separated by ':' or '-' (either case);
// nullopt if malformed.
std::optional<MacAddress> parse_mac(std::string_view text);

}  // namespace hyperscsi::base
