// HyperSCSI v2 frame format: the Ethernet header, the original 5-byte common
// header, our extended header, SACK blocks and the payload. docs/protocol.md is
// the normative description; this header is its C++ mirror.
//
// All functions here are pure: no allocation on the decode path, no I/O, no
// exceptions. Bytes are read and written with explicit big-endian loads and
// stores (bytes.h), never by casting structs onto the wire.
// Thread-safety: plain values and free functions; safe from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "hyperscsi/proto/result.h"

namespace hyperscsi::proto {

inline constexpr uint16_t kEtherType = 0x889A;
inline constexpr uint8_t kProtocolVersion = 0x02;  // our revision in the version byte
inline constexpr size_t kEthernetHeaderSize = 14;  // dst, src, EtherType (untagged)
inline constexpr size_t kCommonHeaderSize = 5;
inline constexpr size_t kExtHeaderSize = 35;  // bytes 5..39 of the HyperSCSI header
inline constexpr size_t kHeaderSize = kCommonHeaderSize + kExtHeaderSize;  // 40
inline constexpr size_t kSackBlockSize = 8;
inline constexpr size_t kMaxSackBlocks = 8;
inline constexpr uint16_t kMaxTag = 511;        // 9-bit Tag No
inline constexpr uint16_t kMaxFragment = 1023;  // 10-bit Fragment No
inline constexpr size_t kMaxFragmentsPerPdu = 1024;
inline constexpr size_t kMinEthernetFrame = 60;  // without FCS; shorter frames are padded

using MacAddress = std::array<uint8_t, 6>;
inline constexpr MacAddress kBroadcastMac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// Opcodes: the original HyperSCSI numbers where the meaning applies.
enum class Opcode : uint8_t {
  kCommandRequest = 0x00,    // "Command Block Encap Request": a fragment of a command PDU
  kCommandReply = 0x01,      // "Command Block Encap Reply": a fragment of a reply PDU
  kDiscoveryReply = 0x10,    // "Device Discovery Reply": a target announcement
  kLoginRequest = 0x11,      // "Auth/Device Neg Request"
  kLoginReply = 0x12,        // "Auth/Device Neg Reply"
  kDisconnect = 0x13,        // "Disconnect Request" (a reply carries kFlagResponse)
  kKeepalive = 0x20,         // "Flow Control Setup/Ack Request": probe, asks for an ack
  kAck = 0x21,               // "Flow Control Ack Reply": standalone ack / window update
  kDiscoveryRequest = 0x30,  // ours: the original named no discovery request
  kPathRequest = 0x31,       // ours (multipath): join / activate / leave one path of a session
  kPathReply = 0x32,         // ours (multipath): the answer to a path request
};
std::string_view opcode_name(Opcode op);
bool is_known_opcode(uint8_t raw);
// Frames with these opcodes carry a sequence number and are delivered reliably.
constexpr bool is_sequenced(Opcode op) {
  return op == Opcode::kCommandRequest || op == Opcode::kCommandReply;
}

// Bits of ExtHeader::flags.
inline constexpr uint8_t kFlagAck = 0x01;         // ack and window are valid
inline constexpr uint8_t kFlagChecksum = 0x02;    // crc32 field is valid and must be checked
inline constexpr uint8_t kFlagRetransmit = 0x04;  // this is a retransmitted copy (informative)
inline constexpr uint8_t kFlagAckNow = 0x08;      // sender asks for an immediate ack
inline constexpr uint8_t kFlagResponse = 0x10;    // answers a request of the same opcode
inline constexpr uint8_t kFlagProtected = 0x20;   // a protection trailer follows the payload
inline constexpr uint8_t kFlagsKnown = 0x3F;

// Bytes 0..4 after the EtherType, exactly as Wireshark's dissector reads them.
struct CommonHeader {
  uint16_t tag = 0;  // 9 bits
  bool last_fragment = true;
  uint16_t fragment = 0;  // 10 bits
  uint8_t version = kProtocolVersion;
  Opcode opcode = Opcode::kAck;

  friend bool operator==(const CommonHeader&, const CommonHeader&) = default;
};

// Bytes 5..39: ours. Big-endian.
struct ExtHeader {
  uint8_t flags = 0;
  uint32_t session_id = 0;  // 0 before login
  uint16_t epoch = 0;       // incremented when a session is resumed
  uint16_t window = 0;      // frames the sender of this frame accepts beyond `ack`
  uint32_t seq = 0;         // sequence number (sequenced opcodes only)
  uint32_t ack = 0;         // next sequence number the sender of this frame expects
  uint32_t pdu_length = 0;  // total bytes of the PDU this fragment belongs to
  uint32_t pdu_offset = 0;  // byte offset of this fragment's payload within the PDU
  // Multipath sessions (docs/protocol.md section 14): the path this frame
  // travels on and that path's generation. 0 in single-path sessions (the
  // bytes were reserved before multipath, sent as 0 and ignored).
  uint8_t path_id = 0;
  uint8_t path_gen = 0;

  friend bool operator==(const ExtHeader&, const ExtHeader&) = default;
};

// A half-open range [start, end) of sequence numbers received above `ack`.
struct SackBlock {
  uint32_t start = 0;
  uint32_t end = 0;
  friend bool operator==(const SackBlock&, const SackBlock&) = default;
};

struct SackList {
  std::array<SackBlock, kMaxSackBlocks> blocks{};
  uint8_t count = 0;
  std::span<const SackBlock> view() const { return {blocks.data(), count}; }
  bool push(SackBlock b) {
    if (count == kMaxSackBlocks) return false;
    blocks[count++] = b;
    return true;
  }
  friend bool operator==(const SackList& a, const SackList& b) {
    if (a.count != b.count) return false;
    for (uint8_t i = 0; i < a.count; ++i)
      if (!(a.blocks[i] == b.blocks[i])) return false;
    return true;
  }
};

struct FrameHeader {
  MacAddress dst{};
  MacAddress src{};
  CommonHeader common;
  ExtHeader ext;
  SackList sacks;
};

// A decoded frame. `payload` points into the buffer given to decode_frame().
struct FrameView {
  FrameHeader header;
  std::span<const uint8_t> payload;
  std::span<const uint8_t> raw;  // the whole frame given to decode_frame (for protection)
};

enum class DecodeError : uint8_t {
  kTruncated,           // shorter than the headers it announces
  kNotHyperScsi,        // EtherType is not 0x889A
  kUnknownVersion,      // version byte is not one we speak
  kUnknownOpcode,       // opcode we do not know
  kBadHeaderLength,     // extended-header length byte too small
  kBadLength,           // payload length runs past the frame, or lengths disagree
  kFragmentOutOfRange,  // fragment/offset/length inconsistent (offset+len > pdu_length...)
  kTooManySackBlocks,   // more SACK blocks than kMaxSackBlocks
  kBadChecksum,         // crc32 mismatch
  kBadField,            // a body field has an invalid value (reserved bits, bad enum...)
};
std::string_view to_string(DecodeError e);

// Largest payload a frame can carry at this MTU (L3 MTU, e.g. 1500 or 9000)
// with `sack_blocks` SACK blocks.
constexpr size_t max_payload(size_t mtu, size_t sack_blocks = 0) {
  const size_t overhead = kHeaderSize + sack_blocks * kSackBlockSize;
  return mtu > overhead ? mtu - overhead : 0;
}

// Writes the full Ethernet frame (untagged; ports add 802.1Q tags) into `out`.
// Computes the crc32 when header.ext.flags has kFlagChecksum. Pads to 60 bytes.
// Returns the frame length, or 0 if `out` is too small or a field is out of
// range (tag > 511, fragment > 1023, more than 8 SACK blocks, payload over
// 65535 bytes, version other than kProtocolVersion, unknown opcode or flags,
// fragment fields that decode_frame() would reject). For unsequenced opcodes
// the frame is one whole fragment: fragment, last_fragment, pdu_offset and
// pdu_length are written as 0, true, 0 and payload.size() whatever `header`
// holds. Never writes past `out`.
size_t encode_frame(std::span<uint8_t> out, const FrameHeader& header,
                    std::span<const uint8_t> payload);

// Writes the frame's headers (Ethernet, HyperSCSI, SACK blocks) into `out`
// as encode_frame() does, without the payload and the padding, and returns
// their length: the frame is these bytes followed by `payload`, so a port may
// send the payload from where it lies (gather). The crc, if any, covers
// `payload`. A frame shorter than 60 bytes needs padding: use encode_frame().
// 0 on the same errors as encode_frame(), or if `out` cannot hold the headers.
size_t encode_frame_header(std::span<uint8_t> out, const FrameHeader& header,
                           std::span<const uint8_t> payload);

// Bytes needed by encode_frame for this header and payload length.
size_t encoded_size(const FrameHeader& header, size_t payload_length);

// Decodes and validates one frame (starting at the destination MAC, untagged).
// Bounded: reads nothing past `frame`; trailing Ethernet padding is ignored.
Result<FrameView, DecodeError> decode_frame(std::span<const uint8_t> frame);

// Only the 5-byte common header (bytes right after the EtherType).
void encode_common_header(std::span<uint8_t, kCommonHeaderSize> out, const CommonHeader& h);
CommonHeader decode_common_header(std::span<const uint8_t, kCommonHeaderSize> in);

}  // namespace hyperscsi::proto
