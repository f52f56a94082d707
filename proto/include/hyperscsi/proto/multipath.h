// Multipath wire messages (docs/protocol.md section 14): the target's port
// list that follows a multipath LoginReply, and the bodies of the Path
// Request (0x31) and Path Reply (0x32) control frames that join, activate and
// leave the paths of a session.
//
// encode_* append to `out`; decode_* are bounded and validating and return a
// typed DecodeError, never throw. The session-level machinery that uses them
// is in path_set.h (transport), initiator_paths.h and target_paths.h.
// Thread-safety: plain values and free functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

// Path ids 0..15: at most 16 paths per session. Path 0 is the login path.
inline constexpr size_t kMaxPaths = 16;
inline constexpr uint8_t kMaxPathId = kMaxPaths - 1;
inline constexpr size_t kMaxTargetPorts = 16;  // entries in a port list
inline constexpr size_t kPathProofSize = 32;   // HMAC-SHA256 (path_auth.h)

// One port through which the target serves the session: its MAC and L3 MTU.
struct TargetPort {
  MacAddress mac{};
  uint16_t mtu = 0;
  friend bool operator==(const TargetPort&, const TargetPort&) = default;
};

// The extension after `auth` of a LoginReply with status kOk whose features
// include kFeatureMultipath: u8 count (1..16), then count x {6-byte MAC, u16 mtu}.
void encode_port_list(std::span<const TargetPort> ports, std::vector<uint8_t>& out);
Result<std::vector<TargetPort>, DecodeError> decode_port_list(std::span<const uint8_t> ext);

// A LoginReply body with its optional port list: the list is present exactly
// when status is kOk and features has kFeatureMultipath (then it is required).
struct MultipathLoginReply {
  LoginReply reply;
  std::vector<TargetPort> ports;  // empty unless multipath
  friend bool operator==(const MultipathLoginReply&, const MultipathLoginReply&) = default;
};
void encode(const MultipathLoginReply& m, std::vector<uint8_t>& out);
Result<MultipathLoginReply, DecodeError> decode_multipath_login_reply(
    std::span<const uint8_t> body);

enum class PathAction : uint8_t {
  kJoin = 0,      // install a new generation of a path (travels on that path)
  kActivate = 1,  // the initiator verified the path: the target may send on it
  kLeave = 2,     // the sender stops using the path (orderly, or it failed)
};
std::string_view to_string(PathAction a);

enum class PathStatus : uint8_t {
  kOk = 0,
  kNotMultipath = 1,     // the session did not negotiate kFeatureMultipath
  kAccessDenied = 2,     // this initiator MAC may not use the session
  kAuthFailed = 3,       // missing or wrong proof in an authenticated session
  kStaleGeneration = 4,  // not newer than the path's current (or last) generation
  kTooManyPaths = 5,
  kDuplicatePath = 6,  // another path of the session has these MACs
  kMtuRejected = 7,    // below 576, or max_transfer does not fit 1024 fragments
  kUnknownPath = 8,    // activate/leave for a path or generation the receiver does not have
};
std::string_view to_string(PathStatus s);

// 0x31 body. The subject path may differ from the path the frame travels on
// (header path_id/path_gen) except for kJoin, which travels on its subject.
struct PathRequest {
  uint32_t nonce = 0;  // echoed by the reply; a repeated request is answered alike
  PathAction action = PathAction::kJoin;
  uint8_t path_id = 0;
  uint8_t path_gen = 0;
  uint16_t mtu = 0;     // kJoin: the sending port's L3 MTU; else 0
  uint16_t window = 0;  // kJoin: frames the sender accepts on the path beyond its ack; else 0
  std::vector<uint8_t> proof;  // empty, or kPathProofSize bytes (authenticated sessions)
  friend bool operator==(const PathRequest&, const PathRequest&) = default;
};

// 0x32 body.
struct PathReply {
  uint32_t nonce = 0;
  PathStatus status = PathStatus::kOk;
  PathAction action = PathAction::kJoin;
  uint8_t path_id = 0;
  uint8_t path_gen = 0;
  uint16_t mtu = 0;     // kJoin, kOk: the path's MTU (min of both ports)
  uint16_t window = 0;  // kJoin, kOk: frames the target accepts on the path
  std::vector<uint8_t> proof;
  friend bool operator==(const PathReply&, const PathReply&) = default;
};

// Fixed part of both bodies before the proof: 12 bytes, then u8 proof_length.
inline constexpr size_t kPathBodyFixedSize = 12;

void encode(const PathRequest& m, std::vector<uint8_t>& out);
void encode(const PathReply& m, std::vector<uint8_t>& out);
Result<PathRequest, DecodeError> decode_path_request(std::span<const uint8_t> body);
Result<PathReply, DecodeError> decode_path_reply(std::span<const uint8_t> body);

// Serial comparison of 8-bit generations: `a` is newer than `b` when it is
// 1..127 ahead modulo 256.
constexpr bool path_gen_newer(uint8_t a, uint8_t b) {
  const auto d = static_cast<uint8_t>(a - b);
  return d != 0 && d < 128;
}

}  // namespace hyperscsi::proto
