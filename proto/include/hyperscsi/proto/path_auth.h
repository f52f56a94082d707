// Keys and proofs of the paths of an authenticated multipath session
// (docs/protocol.md 14.6). Everything derives from the SessionKeys of the
// login handshake (auth.h), so a path can be joined only by whoever holds
// them, and each path generation gets its own per-frame keys: its counters
// and anti-replay window are its own, and a nonce is never reused although
// several paths seal frames at once.
//
//   proof key   = HKDF-SHA256(salt = "", ikm = key_i2t || key_t2i,
//                             info = "hyperscsi path proof v1" || u32 session_id)
//   proof       = HMAC-SHA256(proof key, label || binding || body[0..12))
//   frame keys  = HKDF-SHA256(salt = "", ikm = key of that direction,
//                             info = "hyperscsi path keys v1" || u32 session_id
//                                    || u16 epoch || u8 path_id || u8 path_gen)
//                 -> 32-byte AES-256-GCM key || 4-byte nonce salt
//
// `binding` = u32 session_id, u16 epoch, u8 header path_id, u8 header
// path_gen, source MAC, destination MAC of the frame; `label` names the sender
// and the message ("path request from initiator" ...). Every path generation
// of a multipath session, the login path's generation 0 included, seals with
// its derived keys: the login's keys only seal single-path sessions, so a
// frame sealed before a session became multipath can never share a nonce
// with one sealed after.
// Pure functions: no I/O, no state. Thread-safety: free functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "hyperscsi/proto/auth.h"
#include "hyperscsi/proto/crypto.h"
#include "hyperscsi/proto/multipath.h"

namespace hyperscsi::proto {

enum class PathRole : uint8_t { kInitiator, kTarget };

// Where a path request or reply travels; its proof covers all of it.
struct PathBinding {
  uint32_t session_id = 0;
  uint16_t epoch = 0;
  uint8_t path_id = 0;  // header fields of the frame carrying the message
  uint8_t path_gen = 0;
  MacAddress src{};
  MacAddress dst{};
};

// The key of every path proof of a session (nullopt if the keys are absent or
// OpenSSL fails).
std::optional<crypto::SecretBytes> derive_path_proof_key(const SessionKeys& keys,
                                                         uint32_t session_id);

// Proofs of a request / reply sent by `sender`. The message's own `proof`
// field is ignored (it is what is being computed).
std::optional<crypto::Digest> path_request_proof(std::span<const uint8_t> proof_key,
                                                 PathRole sender, const PathBinding& binding,
                                                 const PathRequest& m);
std::optional<crypto::Digest> path_reply_proof(std::span<const uint8_t> proof_key, PathRole sender,
                                               const PathBinding& binding, const PathReply& m);
// Constant-time checks of the proof a message carries.
bool verify_path_request(std::span<const uint8_t> proof_key, PathRole sender,
                         const PathBinding& binding, const PathRequest& m);
bool verify_path_reply(std::span<const uint8_t> proof_key, PathRole sender,
                       const PathBinding& binding, const PathReply& m);

// Per-frame keys of one path generation (both directions; protection copied).
std::optional<SessionKeys> derive_path_frame_keys(const SessionKeys& session, uint32_t session_id,
                                                  uint16_t epoch, uint8_t path_id,
                                                  uint8_t path_gen);

}  // namespace hyperscsi::proto
