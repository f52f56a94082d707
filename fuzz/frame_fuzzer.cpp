// Fuzzes decode_frame() and the message decoders. Beyond "no crash": a
// decoded frame re-encodes and decodes to the same header and payload, and to
// the very same bytes when nothing non-canonical (longer header, reserved
// bytes, an unchecked crc field, padding) was in the input; every decoded
// message body survives encode -> decode unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_check.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"
#include "hyperscsi/proto/multipath.h"

namespace hp = hyperscsi::proto;

namespace {

bool same_header(const hp::FrameHeader& a, const hp::FrameHeader& b) {
  return a.dst == b.dst && a.src == b.src && a.common == b.common && a.ext == b.ext &&
         a.sacks == b.sacks;
}

bool same_bytes(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// decode(encode(m)) == m for one message type.
template <typename Decode>
void check_message(std::span<const uint8_t> body, Decode decode) {
  auto m = decode(body);
  if (!m) return;
  std::vector<uint8_t> out;
  hp::encode(*m, out);
  auto again = decode(std::span<const uint8_t>(out));
  FUZZ_CHECK(again.ok(), "an encoded message does not decode");
  FUZZ_CHECK(*again == *m, "message changed through encode -> decode");
}

void check_command(std::span<const uint8_t> pdu) {
  auto c = hp::decode_command(pdu);
  if (!c) return;
  FUZZ_CHECK(c->header.cdb_length <= hp::kMaxCdbLength, "CDB longer than the limit");
  FUZZ_CHECK(
      c->data_out.empty() || (c->data_out.data() >= pdu.data() &&
                              c->data_out.data() + c->data_out.size() <= pdu.data() + pdu.size()),
      "data-out points outside the PDU");
  std::vector<uint8_t> out;
  hp::encode(c->header, out);
  out.insert(out.end(), c->data_out.begin(), c->data_out.end());
  auto again = hp::decode_command(out);
  FUZZ_CHECK(again.ok(), "an encoded command does not decode");
  FUZZ_CHECK(again->header == c->header, "command header changed through encode -> decode");
  FUZZ_CHECK(same_bytes(again->data_out, c->data_out), "data-out changed");
}

void check_reply(std::span<const uint8_t> pdu) {
  auto r = hp::decode_reply(pdu);
  if (!r) return;
  FUZZ_CHECK(r->header.sense.size() <= hp::kMaxSenseLength, "sense longer than the limit");
  FUZZ_CHECK(
      r->data_in.empty() || (r->data_in.data() >= pdu.data() &&
                             r->data_in.data() + r->data_in.size() <= pdu.data() + pdu.size()),
      "data-in points outside the PDU");
  std::vector<uint8_t> out;
  hp::encode(r->header, out);
  out.insert(out.end(), r->data_in.begin(), r->data_in.end());
  auto again = hp::decode_reply(out);
  FUZZ_CHECK(again.ok(), "an encoded reply does not decode");
  FUZZ_CHECK(again->header == r->header, "reply header changed through encode -> decode");
  FUZZ_CHECK(same_bytes(again->data_in, r->data_in), "data-in changed");
}

void check_all_messages(std::span<const uint8_t> body) {
  check_message(body, hp::decode_discovery_request);
  check_message(body, hp::decode_discovery_reply);
  check_message(body, hp::decode_login_request);
  check_message(body, hp::decode_login_reply);
  check_message(body, hp::decode_disconnect);
  check_message(body, hp::decode_keepalive);
  check_message(body, hp::decode_path_request);
  check_message(body, hp::decode_path_reply);
  if (auto ports = hp::decode_port_list(body)) {
    std::vector<uint8_t> out;
    hp::encode_port_list(*ports, out);
    auto again = hp::decode_port_list(out);
    FUZZ_CHECK(again.ok() && *again == *ports, "port list changed through encode -> decode");
  }
  check_message(body, hp::decode_multipath_login_reply);
  check_command(body);
  check_reply(body);
}

void check_frame(std::span<const uint8_t> in) {
  auto f = hp::decode_frame(in);
  if (!f) {
    FUZZ_CHECK(!hp::to_string(f.error()).empty(), "decode error without a name");
    return;
  }
  const hp::FrameView& v = *f;
  FUZZ_CHECK(v.payload.empty() || (v.payload.data() >= in.data() &&
                                   v.payload.data() + v.payload.size() <= in.data() + in.size()),
             "payload points outside the frame");
  FUZZ_CHECK(v.header.sacks.count <= hp::kMaxSackBlocks, "too many SACK blocks accepted");

  std::vector<uint8_t> out(hp::encoded_size(v.header, v.payload.size()));
  const size_t n = hp::encode_frame(out, v.header, v.payload);
  FUZZ_CHECK(n != 0, "a decoded frame does not re-encode");
  FUZZ_CHECK(n == out.size(), "encode_frame disagrees with encoded_size");
  auto again = hp::decode_frame(std::span<const uint8_t>(out.data(), n));
  FUZZ_CHECK(again.ok(), "a re-encoded frame does not decode");
  FUZZ_CHECK(same_header(again->header, v.header), "header changed through decode -> encode");
  FUZZ_CHECK(same_bytes(again->payload, v.payload), "payload changed through decode -> encode");

  // Canonical input (35-byte extension, zero reserved bytes, crc present or
  // zero) re-encodes to exactly the bytes that were covered.
  const uint8_t* hs = in.data() + hp::kEthernetHeaderSize;
  const size_t covered = hp::kEthernetHeaderSize + hp::kHeaderSize +
                         size_t{v.header.sacks.count} * hp::kSackBlockSize + v.payload.size();
  const bool checksummed = (v.header.ext.flags & hp::kFlagChecksum) != 0;
  const bool canonical = hs[5] == hp::kExtHeaderSize && hs[34] == 0 && hs[35] == 0 &&
                         (checksummed || (hs[36] | hs[37] | hs[38] | hs[39]) == 0);
  if (canonical) {
    FUZZ_CHECK(std::memcmp(out.data(), in.data(), covered) == 0,
               "canonical frame re-encodes to other bytes");
  }

  // The body as the receiver would read it.
  switch (v.header.common.opcode) {
    case hp::Opcode::kDiscoveryRequest:
      check_message(v.payload, hp::decode_discovery_request);
      break;
    case hp::Opcode::kDiscoveryReply:
      check_message(v.payload, hp::decode_discovery_reply);
      break;
    case hp::Opcode::kLoginRequest:
      check_message(v.payload, hp::decode_login_request);
      break;
    case hp::Opcode::kLoginReply:
      check_message(v.payload, hp::decode_login_reply);
      break;
    case hp::Opcode::kDisconnect:
      check_message(v.payload, hp::decode_disconnect);
      break;
    case hp::Opcode::kKeepalive:
    case hp::Opcode::kAck:
      check_message(v.payload, hp::decode_keepalive);
      break;
    case hp::Opcode::kCommandRequest:
      if (v.header.common.fragment == 0 && v.header.common.last_fragment) check_command(v.payload);
      break;
    case hp::Opcode::kCommandReply:
      if (v.header.common.fragment == 0 && v.header.common.last_fragment) check_reply(v.payload);
      break;
    case hp::Opcode::kPathRequest:
      check_message(v.payload, hp::decode_path_request);
      break;
    case hp::Opcode::kPathReply:
      check_message(v.payload, hp::decode_path_reply);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  check_frame(in);
  // The message decoders see arbitrary bodies directly too, so their corner
  // cases need not get past the frame header first.
  check_all_messages(in);
  return 0;
}
