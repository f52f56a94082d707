// A minimal initiator for engine tests: proto::InitiatorSession over a Port,
// commands encoded with proto::encode(CommandHeader), replies decoded with
// proto::decode_reply. Driven from the test thread; every wait is bounded.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/port.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/proto/initiator_session.h"
#include "hyperscsi/proto/messages.h"

namespace hyperscsi::test {

using namespace std::chrono_literals;

struct Reply {
  proto::ReplyHeader header;
  std::vector<uint8_t> data;
  uint8_t sense_key() const { return header.sense.size() > 2 ? (header.sense[2] & 0x0F) : 0; }
  uint8_t asc() const { return header.sense.size() > 12 ? header.sense[12] : 0; }
  uint8_t ascq() const { return header.sense.size() > 13 ? header.sense[13] : 0; }
};

inline std::vector<uint8_t> cdb_inquiry(uint16_t alloc = 96) {
  return {0x12, 0, 0, static_cast<uint8_t>(alloc >> 8), static_cast<uint8_t>(alloc), 0};
}
inline std::vector<uint8_t> cdb_tur() {
  return {0, 0, 0, 0, 0, 0};
}
inline std::vector<uint8_t> cdb_read_capacity10() {
  return {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0};
}
inline std::vector<uint8_t> cdb_rw10(uint8_t op, uint32_t lba, uint16_t blocks, bool fua = false) {
  return {op,
          static_cast<uint8_t>(fua ? 0x08 : 0),
          static_cast<uint8_t>(lba >> 24),
          static_cast<uint8_t>(lba >> 16),
          static_cast<uint8_t>(lba >> 8),
          static_cast<uint8_t>(lba),
          0,
          static_cast<uint8_t>(blocks >> 8),
          static_cast<uint8_t>(blocks),
          0};
}
inline std::vector<uint8_t> cdb_read10(uint32_t lba, uint16_t blocks) {
  return cdb_rw10(0x28, lba, blocks);
}
inline std::vector<uint8_t> cdb_write10(uint32_t lba, uint16_t blocks, bool fua = false) {
  return cdb_rw10(0x2A, lba, blocks, fua);
}
inline std::vector<uint8_t> cdb_sync_cache10() {
  return {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0};
}
inline std::vector<uint8_t> cdb_report_luns(uint32_t alloc = 4096) {
  return {0xA0,
          0,
          0,
          0,
          0,
          0,
          static_cast<uint8_t>(alloc >> 24),
          static_cast<uint8_t>(alloc >> 16),
          static_cast<uint8_t>(alloc >> 8),
          static_cast<uint8_t>(alloc),
          0,
          0};
}
inline uint32_t be32(const std::vector<uint8_t>& d, size_t at) {
  return (uint32_t{d[at]} << 24) | (uint32_t{d[at + 1]} << 16) | (uint32_t{d[at + 2]} << 8) |
         uint32_t{d[at + 3]};
}

class TestInitiator {
 public:
  TestInitiator(io::Port& port, std::string name, uint64_t seed = 7,
                proto::Duration rto_initial = std::chrono::milliseconds(50))
      : port_(port), sink_(port) {
    proto::InitiatorConfig c;
    c.local_mac = port.mac();
    c.initiator_name = std::move(name);
    c.mtu = static_cast<uint16_t>(port.mtu());
    c.seed = seed;
    c.transport.rto.initial = rto_initial;
    session_ = std::make_unique<proto::InitiatorSession>(c);
  }

  // Logs in; true once established. `why` says what went wrong otherwise.
  bool login(const proto::MacAddress& target, const std::string& target_name,
             std::chrono::milliseconds timeout = 5s) {
    if (!session_->login(target, target_name, proto::Clock::now())) return false;
    const auto deadline = proto::Clock::now() + timeout;
    while (proto::Clock::now() < deadline) {
      pump();
      if (session_->established()) return true;
      const auto s = session_->state();
      if (s == proto::InitiatorState::kFailed || s == proto::InitiatorState::kDead ||
          s == proto::InitiatorState::kDisconnected)
        break;
      std::this_thread::sleep_for(200us);
    }
    why_ = session_->failure().describe();
    return false;
  }

  // Queues a command; returns its cmd_sn (0 if the session refused it).
  uint32_t send(uint16_t lun, const std::vector<uint8_t>& cdb, uint32_t expected_in,
                const std::vector<uint8_t>& data_out = {}) {
    proto::CommandHeader h;
    h.cmd_sn = next_sn_;
    h.reply_ack_sn = ack_sn();
    h.lun = lun;
    h.flags = static_cast<uint8_t>((expected_in ? proto::kCommandFlagDataIn : 0) |
                                   (data_out.empty() ? 0 : proto::kCommandFlagDataOut));
    h.expected_data_in = expected_in;
    h.data_out_length = static_cast<uint32_t>(data_out.size());
    h.cdb_length = static_cast<uint8_t>(cdb.size());
    std::copy(cdb.begin(), cdb.end(), h.cdb.begin());
    std::vector<uint8_t> pdu;
    proto::encode(h, pdu);
    pdu.insert(pdu.end(), data_out.begin(), data_out.end());
    const uint16_t tag = static_cast<uint16_t>(next_sn_ % (proto::kMaxTag + 1));
    if (!session_->send_command(tag, std::move(pdu))) return 0;
    outstanding_.insert(next_sn_);
    return next_sn_++;
  }

  // The reply to `cmd_sn` if it has arrived (no pumping).
  std::optional<Reply> take(uint32_t cmd_sn) {
    auto it = replies_.find(cmd_sn);
    if (it == replies_.end()) return std::nullopt;
    Reply r = std::move(it->second);
    replies_.erase(it);
    return r;
  }

  // Waits for the reply to `cmd_sn`.
  std::optional<Reply> wait(uint32_t cmd_sn, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = proto::Clock::now() + timeout;
    for (;;) {
      pump();
      if (auto r = take(cmd_sn)) return r;
      if (!session_->established() || proto::Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(100us);
    }
  }

  std::optional<Reply> command(uint16_t lun, const std::vector<uint8_t>& cdb, uint32_t expected_in,
                               const std::vector<uint8_t>& data_out = {},
                               std::chrono::milliseconds timeout = 10s) {
    // A UNIT ATTENTION (power on, reset, capacity change) is reported once
    // per nexus; like a host, retry the command after it.
    for (int attempt = 0; attempt < 4; ++attempt) {
      const uint32_t sn = send(lun, cdb, expected_in, data_out);
      if (sn == 0) return std::nullopt;
      auto r = wait(sn, timeout);
      if (!r || r->header.status != 0x02 || r->sense_key() != 0x06) return r;
      ++unit_attentions_;
    }
    return std::nullopt;
  }
  uint64_t unit_attentions() const { return unit_attentions_; }

  // Receives, feeds the session, sends what is due.
  void pump() {
    io::Packet pkts[32];
    for (int round = 0; round < 8; ++round) {
      const size_t n = port_.rx_burst(std::span<io::Packet>(pkts, 32));
      const auto now = proto::Clock::now();
      for (size_t i = 0; i < n; ++i) {
        auto f = proto::decode_frame(pkts[i].bytes());
        if (f) session_->on_frame(*f, now);
        pkts[i].reset();
      }
      if (n < 32) break;
    }
    session_->poll(proto::Clock::now(), sink_);
    sink_.flush();
    while (auto pdu = session_->pop_reply()) {
      auto r = proto::decode_reply(pdu->bytes);
      if (!r) {
        ++bad_replies_;
        continue;
      }
      const uint32_t sn = r->header.cmd_sn;
      if (outstanding_.erase(sn) == 0) continue;  // not ours or a duplicate
      answered_.insert(sn);
      replies_[sn] = Reply{r->header, std::vector<uint8_t>(r->data_in.begin(), r->data_in.end())};
    }
  }

  // Stops talking: no more pump() calls; the target must reclaim the session.
  proto::InitiatorSession& session() { return *session_; }
  const std::string& why() const { return why_; }
  uint64_t bad_replies() const { return bad_replies_; }

 private:
  uint32_t ack_sn() {
    // Every reply below this has arrived.
    while (answered_.count(low_) != 0) answered_.erase(low_++);
    return low_;
  }

  io::Port& port_;
  io::PortSink sink_;
  std::unique_ptr<proto::InitiatorSession> session_;
  uint32_t next_sn_ = 1;
  uint32_t low_ = 1;
  std::set<uint32_t> outstanding_;
  std::set<uint32_t> answered_;
  std::map<uint32_t, Reply> replies_;
  std::string why_;
  uint64_t bad_replies_ = 0;
  uint64_t unit_attentions_ = 0;
};

}  // namespace hyperscsi::test
