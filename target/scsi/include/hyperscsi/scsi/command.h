// The transport-independent command contract between an engine and the SCSI
// layer. Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace hyperscsi::scsi {

// Identity of the I_T nexus a command arrived on. Unit attentions are kept per
// nexus (initiator + session); persistent and RESERVE(6) reservations belong to
// the initiator port (initiator name), so they survive a reconnect.
struct Nexus {
  std::string initiator;         // initiator port name
  std::uint64_t session_id = 0;  // opaque, unique per login

  bool operator==(const Nexus&) const = default;
};

struct CommandRequest {
  std::span<const std::uint8_t> cdb;       // copied by execute(); may be freed after it returns
  std::span<const std::uint8_t> data_out;  // borrowed until the completion callback has run
  std::uint32_t expected_data_in = 0;      // initiator's buffer for data-in (bytes)
  Nexus nexus;
  // The transport already has other data queued to send on this session, so
  // a read's data is not needed at once: the store may copy it on another
  // thread (BlockStore::set_read_offload) while the caller's thread sends.
  bool sender_busy = false;
};

enum class Residual : std::uint8_t { kNone, kUnderflow, kOverflow };

// Residuals follow SAM-5: underflow = the command moved fewer bytes than the
// expected length (residual = the difference); overflow = the command wanted
// more than the expected length and only the expected length was moved.
// For data-in the expected length is expected_data_in, for data-out it is
// data_out.size(). A write whose data_out is shorter than its CDB requires is
// not executed (CHECK CONDITION, INVALID FIELD IN CDB) and reports overflow.
struct CommandResult {
  std::uint8_t status = 0;          // status::k*
  std::vector<std::uint8_t> sense;  // fixed format, present with CHECK CONDITION
  std::vector<std::uint8_t>
      data_in;  // [data_in_offset, end): the data, never longer than expected_data_in
  // Bytes at the front of data_in that are not data: room a READ leaves for
  // the transport's reply header (LuConfig::reply_headroom), so the reply is
  // sent from this buffer without copying the data. 0 for every other command.
  std::uint32_t data_in_offset = 0;
  // A READ that leaves reply headroom (the transport's path) returns its data
  // here instead of in data_in: [0, read_size) of a buffer that was never
  // zero-filled (the store wrote every data byte, the headroom is zeroed), so
  // a large read costs no memset (issue 20) and the transport may share the
  // buffer as it is. data_in is then empty; data_in_offset applies to this
  // buffer. Null for every other command and for a READ without headroom.
  std::shared_ptr<std::uint8_t[]> read_buffer;
  std::size_t read_size = 0;
  Residual residual = Residual::kNone;
  std::uint32_t residual_count = 0;

  // The whole buffer, headroom included.
  std::span<const std::uint8_t> buffer() const {
    if (read_buffer) return {read_buffer.get(), read_size};
    return data_in;
  }
  std::span<const std::uint8_t> data() const { return buffer().subspan(data_in_offset); }
  std::size_t data_size() const { return buffer().size() - data_in_offset; }
};

using CommandCallback = std::function<void(CommandResult)>;

}  // namespace hyperscsi::scsi
