// Bodies of the control frames and the headers of the command/reply PDUs.
// docs/protocol.md gives the byte layout of each; these are their C++ values.
//
// encode_* append to `out` (which they may grow); decode_* are bounded and
// validating and return a typed DecodeError. Encoders clamp strings, vectors,
// auth, CDB and sense to their limits below: validate them where they are
// configured or built. Strings are length-prefixed
// (u8 length, then bytes) and limited to kMaxNameLength.
// Thread-safety: plain values and free functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

inline constexpr size_t kMaxNameLength = 223;  // like an iSCSI name
inline constexpr size_t kMaxCdbLength = 32;
inline constexpr size_t kMaxSenseLength = 252;
inline constexpr size_t kMaxLunsInDiscovery = 256;
inline constexpr size_t kMaxAuthLength = 512;

// Feature bits negotiated at login (the intersection of both sides' offers).
inline constexpr uint32_t kFeatureChecksum = 1u << 0;       // crc32 on every frame
inline constexpr uint32_t kFeatureSack = 1u << 1;           // selective acknowledgement
inline constexpr uint32_t kFeatureDelayedAck = 1u << 2;     // receiver may delay acks
inline constexpr uint32_t kFeatureSessionResume = 1u << 3;  // resume by session id
// Several paths (initiator port x target port) per session, section 14 of
// docs/protocol.md. Not in kFeaturesV2: offered only by multipath-capable
// engines (proto/multipath.h).
inline constexpr uint32_t kFeatureMultipath = 1u << 4;
inline constexpr uint32_t kFeaturesV2 =
    kFeatureChecksum | kFeatureSack | kFeatureDelayedAck | kFeatureSessionResume;

// 0x30: broadcast by an initiator looking for targets.
struct DiscoveryRequest {
  uint32_t nonce = 0;  // echoed by every reply
  std::string initiator_name;
  std::string target_filter;  // empty: every target answers
  friend bool operator==(const DiscoveryRequest&, const DiscoveryRequest&) = default;
};

struct LunInfo {
  uint16_t lun = 0;
  bool read_only = false;
  uint32_t block_size = 512;
  uint64_t num_blocks = 0;
  friend bool operator==(const LunInfo&, const LunInfo&) = default;
};

// 0x10: a target's answer to discovery, or its announcement at start (nonce 0).
struct DiscoveryReply {
  uint32_t nonce = 0;
  uint16_t mtu = 0;       // the target port's MTU
  uint32_t features = 0;  // features the target offers
  std::string target_name;
  std::vector<LunInfo> luns;  // the LUNs this initiator may see
  friend bool operator==(const DiscoveryReply&, const DiscoveryReply&) = default;
};

// 0x11: login, or resumption of an existing session (resume_session_id != 0).
struct LoginRequest {
  uint32_t nonce = 0;
  uint16_t mtu = 0;           // the initiator port's MTU
  uint16_t window = 0;        // frames the initiator can receive beyond its ack
  uint32_t max_transfer = 0;  // largest PDU the initiator accepts, bytes
  uint32_t features = 0;
  uint32_t resume_session_id = 0;
  uint16_t resume_epoch = 0;
  std::string initiator_name;
  std::string target_name;
  std::vector<uint8_t> auth;  // opaque authentication exchange (security issue)
  friend bool operator==(const LoginRequest&, const LoginRequest&) = default;
};

enum class LoginStatus : uint8_t {
  kOk = 0,
  kUnknownTarget = 1,
  kAccessDenied = 2,
  kAuthFailed = 3,
  kMtuMismatch = 4,  // the peers' MTUs differ; named so the user can fix it
  kParameterRejected = 5,
  kTooManySessions = 6,
  kResumeFailed = 7,  // the session to resume is unknown; log in afresh
  kAuthContinue = 8,  // authentication challenge in `auth`: send the proof (auth.h)
};
std::string_view to_string(LoginStatus s);

// 0x12: the target's answer. session_id/epoch are also in the ext header.
struct LoginReply {
  uint32_t nonce = 0;  // echo of the request's nonce
  LoginStatus status = LoginStatus::kOk;
  uint16_t mtu = 0;           // negotiated MTU
  uint16_t window = 0;        // frames the target can receive beyond its ack
  uint32_t max_transfer = 0;  // negotiated largest PDU
  uint32_t features = 0;      // negotiated features
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  uint32_t keepalive_ms = 0;  // send a keepalive after this much silence
  uint32_t dead_time_ms = 0;  // peer declared dead after this much silence
  std::vector<uint8_t> auth;
  friend bool operator==(const LoginReply&, const LoginReply&) = default;
};

enum class DisconnectReason : uint8_t {
  kNormal = 0,
  kUnknownSession = 1,  // the receiver has no such session (log in again)
  kDeadPeer = 2,
  kShutdown = 3,
  kProtocolError = 4,
  kStaleEpoch = 5,
};
std::string_view to_string(DisconnectReason r);

// 0x13 body.
struct Disconnect {
  DisconnectReason reason = DisconnectReason::kNormal;
  friend bool operator==(const Disconnect&, const Disconnect&) = default;
};

// 0x20 body; the 0x21 answer (kFlagResponse) echoes probe_id. A probe may be
// padded to the full MTU (to prove the path carries full frames); the answer
// is padded to the same size. Decoders ignore the padding.
struct Keepalive {
  uint32_t probe_id = 0;
  uint16_t pad_to = 0;  // encode: pad the body so the frame is this many bytes of L3 payload
  friend bool operator==(const Keepalive&, const Keepalive&) = default;
};

// Command PDU header (0x00 fragments reassembled): the CDB, then data-out.
inline constexpr uint8_t kCommandFlagDataIn = 0x01;
inline constexpr uint8_t kCommandFlagDataOut = 0x02;
struct CommandHeader {
  uint32_t cmd_sn = 0;        // per-session command number (exactly-once key)
  uint32_t reply_ack_sn = 0;  // the initiator holds every reply for cmd_sn before this
  uint16_t lun = 0;
  uint8_t flags = 0;              // kCommandFlagDataIn / kCommandFlagDataOut
  uint8_t task_attribute = 0;     // 0 simple, 1 ordered, 2 head of queue
  uint32_t expected_data_in = 0;  // bytes of data-in the initiator accepts
  uint32_t data_out_length = 0;   // bytes of data-out that follow the CDB
  std::array<uint8_t, kMaxCdbLength> cdb{};
  uint8_t cdb_length = 0;
  std::span<const uint8_t> cdb_view() const { return {cdb.data(), cdb_length}; }
  bool operator==(const CommandHeader&) const = default;
};
// Fixed part: the fields above in declaration order up to data_out_length (20
// bytes), then cdb_length (u8) and 3 reserved bytes; then cdb_length bytes.
inline constexpr size_t kCommandHeaderFixedSize = 24;  // then cdb_length bytes

// Reply PDU header (0x01 fragments reassembled): sense, then data-in.
inline constexpr uint8_t kReplyFlagOverflow = 0x01;
inline constexpr uint8_t kReplyFlagUnderflow = 0x02;
enum class CommandResponse : uint8_t {
  kCompleted = 0,      // SCSI status and sense are meaningful
  kTargetFailure = 1,  // the target could not execute it
  kRejected = 2,       // malformed command PDU
};
struct ReplyHeader {
  uint32_t cmd_sn = 0;
  uint8_t status = 0;  // SCSI status byte
  CommandResponse response = CommandResponse::kCompleted;
  uint8_t flags = 0;
  uint32_t residual = 0;
  uint32_t data_in_length = 0;  // bytes of data-in that follow the sense
  std::vector<uint8_t> sense;
  bool operator==(const ReplyHeader&) const = default;
};
inline constexpr size_t kReplyHeaderFixedSize = 16;  // then sense bytes

void encode(const DiscoveryRequest& m, std::vector<uint8_t>& out);
void encode(const DiscoveryReply& m, std::vector<uint8_t>& out);
void encode(const LoginRequest& m, std::vector<uint8_t>& out);
void encode(const LoginReply& m, std::vector<uint8_t>& out);
void encode(const Disconnect& m, std::vector<uint8_t>& out);
void encode(const Keepalive& m, std::vector<uint8_t>& out);
// Command/reply headers: the returned size is where data-out / data-in starts.
void encode(const CommandHeader& m, std::vector<uint8_t>& out);
void encode(const ReplyHeader& m, std::vector<uint8_t>& out);

Result<DiscoveryRequest, DecodeError> decode_discovery_request(std::span<const uint8_t> body);
Result<DiscoveryReply, DecodeError> decode_discovery_reply(std::span<const uint8_t> body);
Result<LoginRequest, DecodeError> decode_login_request(std::span<const uint8_t> body);
Result<LoginReply, DecodeError> decode_login_reply(std::span<const uint8_t> body);
Result<Disconnect, DecodeError> decode_disconnect(std::span<const uint8_t> body);
Result<Keepalive, DecodeError> decode_keepalive(std::span<const uint8_t> body);

// PDU decoders also return where the data begins: header size within the PDU.
struct DecodedCommand {
  CommandHeader header;
  std::span<const uint8_t> data_out;  // points into the PDU
};
struct DecodedReply {
  ReplyHeader header;
  std::span<const uint8_t> data_in;  // points into the PDU
};
Result<DecodedCommand, DecodeError> decode_command(std::span<const uint8_t> pdu);
Result<DecodedReply, DecodeError> decode_reply(std::span<const uint8_t> pdu);
// A reply reassembled in place (ReceivedPdu::data_placed): `header` is its
// first kReplyHeaderFixedSize bytes, `placed` the rest of the PDU (sense,
// then data-in) where it was placed. The same checks as decode_reply (the
// header must hold exactly the fixed part, and sense plus data_in_length
// must be what was placed); sense and data_in point into `placed`.
Result<DecodedReply, DecodeError> decode_placed_reply(std::span<const uint8_t> header,
                                                      std::span<const uint8_t> placed);

}  // namespace hyperscsi::proto
