// hyperscsi-demo: pushes SCSI-like command and reply PDUs through the
// protocol over the in-memory link with loss, reordering and duplication,
// verifies every byte, and prints what was delivered and retransmitted.
//
// An "initiator" Connection keeps a queue of WRITE/READ commands in flight; a
// "target" Connection executes them against a RAM disk and replies. Each tag
// owns a disjoint slice of the disk, so a READ can be checked against the
// model of what that tag last wrote there.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/proto/connection.h"
#include "hyperscsi/proto/frame.h"
#include "hyperscsi/proto/messages.h"

namespace {

using namespace hyperscsi;
using proto::Clock;

struct Options {
  uint32_t commands = 2000;
  uint32_t queue_depth = 32;
  uint32_t max_kib = 256;
  size_t mtu = 1500;
  double loss = 0.05;
  double reorder = 0.05;
  double duplicate = 0.02;
  uint64_t seed = 1;
  double time_limit_s = 60;
};

constexpr uint32_t kBlock = 512;
constexpr uint8_t kRead10 = 0x28;
constexpr uint8_t kWrite10 = 0x2A;

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
uint32_t get_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint16_t get_be16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

// Both ends of one link, pumped from one thread.
struct Peer {
  io::MemPort* port;
  proto::Connection conn;
  io::PortSink sink;
  uint64_t bad_frames = 0;

  Peer(io::MemPort* p, const proto::TransportParams& params, const proto::Endpoint& ep)
      : port(p), conn(params, ep), sink(*p) {}

  // Receives and feeds every frame queued for this end; returns how many.
  size_t receive(proto::TimePoint now) {
    std::array<io::Packet, 64> burst;
    size_t total = 0;
    for (size_t n; (n = port->rx_burst(burst)) > 0;) {
      for (size_t i = 0; i < n; ++i) {
        auto frame = proto::decode_frame(burst[i].bytes());
        if (frame.ok())
          conn.on_frame(*frame, now);
        else
          ++bad_frames;  // corrupted copies fail the checksum: the sender retransmits
        burst[i].reset();
      }
      total += n;
    }
    return total;
  }

  void transmit(proto::TimePoint now) {
    conn.poll(now, sink);
    sink.flush();
  }
};

struct Command {
  bool write = false;
  uint32_t lba = 0;
  uint32_t blocks = 0;
  uint32_t cmd_sn = 0;
  Clock::time_point started;
};

class Demo {
 public:
  explicit Demo(const Options& o) : opt_(o), rng_(o.seed) {
    slice_blocks_ = (o.max_kib * 1024 / kBlock) * 2;
    disk_.assign(size_t{slice_blocks_} * kBlock * o.queue_depth, 0);
    model_ = disk_;
  }

  int run() {
    io::MemLinkConfig cfg;
    cfg.name = "demo";
    cfg.mtu_a = cfg.mtu_b = opt_.mtu;
    cfg.seed = opt_.seed;
    io::Impairment imp;
    imp.loss = opt_.loss;
    imp.reorder = opt_.reorder;
    imp.duplicate = opt_.duplicate;
    imp.delay = std::chrono::microseconds(20);
    cfg.a_to_b = cfg.b_to_a = imp;
    auto link = io::make_mem_link(cfg);
    if (!link.ok()) {
      fmt::print(stderr, "demo: cannot create the in-memory link: {}\n", link.error().message);
      return 1;
    }
    proto::TransportParams params;
    params.mtu = opt_.mtu;
    proto::Endpoint ie{link->a->mac(), link->b->mac(), 0x1234abcd, 1, params.receive_window};
    proto::Endpoint te{link->b->mac(), link->a->mac(), 0x1234abcd, 1, params.receive_window};
    Peer initiator(link->a.get(), params, ie);
    Peer target(link->b.get(), params, te);

    fmt::print(
        "HyperSCSI demo: {} commands (QD {}, up to {} KiB), MTU {}, "
        "link loss {:.0f}% reorder {:.0f}% duplicate {:.0f}% each way, seed {}\n",
        opt_.commands, opt_.queue_depth, opt_.max_kib, opt_.mtu, opt_.loss * 100,
        opt_.reorder * 100, opt_.duplicate * 100, opt_.seed);

    inflight_.assign(opt_.queue_depth, std::nullopt);
    const auto start = Clock::now();
    const auto limit = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(opt_.time_limit_s));
    while (completed_ < opt_.commands && Clock::now() < limit) {
      issue_commands(initiator);
      auto now = Clock::now();
      size_t moved = target.receive(now) + initiator.receive(now);
      while (auto pdu = target.conn.pop_pdu()) execute(target, *pdu);
      while (auto pdu = initiator.conn.pop_pdu()) complete(*pdu);
      now = Clock::now();
      target.transmit(now);
      initiator.transmit(now);
      if (moved == 0) idle_wait(initiator, target);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    report(initiator, target, *link, secs);
    const bool ok = completed_ == opt_.commands && mismatches_ == 0 && failures_ == 0;
    fmt::print("{}\n", ok ? "RESULT: every command completed once and every byte read back "
                            "matched"
                          : "RESULT: FAILED");
    return ok ? 0 : 1;
  }

 private:
  void issue_commands(Peer& ini) {
    for (uint16_t tag = 0; tag < opt_.queue_depth && issued_ < opt_.commands; ++tag) {
      if (inflight_[tag]) continue;
      Command c;
      c.write = std::bernoulli_distribution(0.5)(rng_) || !written_any_[tag % 512];
      c.blocks = std::uniform_int_distribution<uint32_t>(1, opt_.max_kib * 1024 / kBlock)(rng_);
      c.lba = tag * slice_blocks_ +
              std::uniform_int_distribution<uint32_t>(0, slice_blocks_ - c.blocks)(rng_);
      c.cmd_sn = next_cmd_sn_++;
      c.started = Clock::now();

      proto::CommandHeader h;
      h.cmd_sn = c.cmd_sn;
      h.lun = 0;
      h.cdb_length = 10;
      h.cdb[0] = c.write ? kWrite10 : kRead10;
      put_be32(&h.cdb[2], c.lba);
      h.cdb[7] = static_cast<uint8_t>(c.blocks >> 8);
      h.cdb[8] = static_cast<uint8_t>(c.blocks);
      const size_t bytes = size_t{c.blocks} * kBlock;
      std::vector<uint8_t> pdu;
      if (c.write) {
        h.flags = proto::kCommandFlagDataOut;
        h.data_out_length = static_cast<uint32_t>(bytes);
        proto::encode(h, pdu);
        const size_t at = pdu.size();
        pdu.resize(at + bytes);
        for (size_t i = 0; i < bytes; ++i) pdu[at + i] = static_cast<uint8_t>(rng_());
        std::memcpy(&model_[size_t{c.lba} * kBlock], &pdu[at], bytes);
        written_any_[tag % 512] = true;
      } else {
        h.flags = proto::kCommandFlagDataIn;
        h.expected_data_in = static_cast<uint32_t>(bytes);
        proto::encode(h, pdu);
      }
      if (!ini.conn.send_pdu(proto::Opcode::kCommandRequest, tag, std::move(pdu))) return;
      inflight_[tag] = c;
      ++issued_;
    }
  }

  // The target side: a READ(10)/WRITE(10) against the RAM disk.
  void execute(Peer& tgt, const proto::ReceivedPdu& pdu) {
    auto cmd = proto::decode_command(pdu.bytes);
    proto::ReplyHeader r;
    std::vector<uint8_t> data_in;
    if (!cmd.ok()) {
      r.response = proto::CommandResponse::kRejected;
    } else {
      const auto& h = cmd->header;
      r.cmd_sn = h.cmd_sn;
      const uint32_t lba = get_be32(&h.cdb[2]);
      const size_t bytes = size_t{get_be16(&h.cdb[7])} * kBlock;
      const size_t off = size_t{lba} * kBlock;
      if (off + bytes > disk_.size()) {
        r.status = 0x02;  // CHECK CONDITION; a real target adds sense data
      } else if (h.cdb[0] == kWrite10 && cmd->data_out.size() == bytes) {
        std::memcpy(&disk_[off], cmd->data_out.data(), bytes);
        ++executed_writes_;
      } else if (h.cdb[0] == kRead10) {
        data_in.assign(disk_.begin() + static_cast<ptrdiff_t>(off),
                       disk_.begin() + static_cast<ptrdiff_t>(off + bytes));
        ++executed_reads_;
      } else {
        r.status = 0x02;
      }
    }
    r.data_in_length = static_cast<uint32_t>(data_in.size());
    std::vector<uint8_t> reply;
    proto::encode(r, reply);
    reply.insert(reply.end(), data_in.begin(), data_in.end());
    if (!tgt.conn.send_pdu(proto::Opcode::kCommandReply, pdu.tag, std::move(reply))) ++failures_;
  }

  // The initiator side: match the reply to its command and check READ data.
  void complete(const proto::ReceivedPdu& pdu) {
    auto rep = proto::decode_reply(pdu.bytes);
    if (pdu.tag >= inflight_.size() || !inflight_[pdu.tag] || !rep.ok()) {
      ++failures_;
      return;
    }
    const Command c = *inflight_[pdu.tag];
    inflight_[pdu.tag].reset();
    if (rep->header.cmd_sn != c.cmd_sn || rep->header.status != 0) ++failures_;
    if (!c.write) {
      const size_t off = size_t{c.lba} * kBlock;
      const size_t bytes = size_t{c.blocks} * kBlock;
      if (rep->data_in.size() != bytes ||
          std::memcmp(rep->data_in.data(), &model_[off], bytes) != 0)
        ++mismatches_;
    }
    bytes_moved_ += size_t{c.blocks} * kBlock;
    latencies_us_.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - c.started).count());
    ++completed_;
  }

  // Nothing arrived: sleep until the nearest timer, at most 200 us (delayed
  // frames on the link become due without a timer of ours).
  static void idle_wait(const Peer& a, const Peer& b) {
    const auto deadline = std::min(a.conn.next_deadline(), b.conn.next_deadline());
    const auto cap = Clock::now() + std::chrono::microseconds(200);
    std::this_thread::sleep_until(std::min(deadline, cap));
  }

  void report(const Peer& ini, const Peer& tgt, const io::MemLink& link, double secs) {
    std::sort(latencies_us_.begin(), latencies_us_.end());
    auto pct = [&](double p) {
      if (latencies_us_.empty()) return 0.0;
      return latencies_us_[static_cast<size_t>(p * (latencies_us_.size() - 1))];
    };
    fmt::print("\ncommands completed   {} of {} ({} writes and {} reads executed by the target)\n",
               completed_, opt_.commands, executed_writes_, executed_reads_);
    fmt::print(
        "data verified        {:.1f} MiB in {:.2f} s = {:.1f} MiB/s, latency p50 {:.0f} us "
        "p99 {:.0f} us\n",
        bytes_moved_ / 1048576.0, secs, bytes_moved_ / 1048576.0 / secs, pct(0.5), pct(0.99));
    fmt::print("read mismatches      {}   failures {}\n\n", mismatches_, failures_);
    fmt::print("{:<28}{:>14}{:>14}\n", "", "initiator", "target");
    auto row = [](const char* name, auto a, auto b) {
      fmt::print("{:<28}{:>14}{:>14}\n", name, a, b);
    };
    const auto& is = ini.conn.stats();
    const auto& ts = tgt.conn.stats();
    row("PDUs sent", is.pdus_sent, ts.pdus_sent);
    row("PDUs delivered", is.pdus_received, ts.pdus_received);
    row("data frames sent", is.frames_sent, ts.frames_sent);
    row("frames retransmitted", is.frames_retransmitted, ts.frames_retransmitted);
    row("  of which fast retransmit", is.fast_retransmits, ts.fast_retransmits);
    row("retransmission timeouts", is.timeouts, ts.timeouts);
    row("standalone acks sent", is.acks_sent, ts.acks_sent);
    row("duplicates discarded", is.duplicates_received, ts.duplicates_received);
    row("corrupt frames dropped", ini.bad_frames, tgt.bad_frames);
    row("smoothed RTT (us)", std::chrono::duration_cast<std::chrono::microseconds>(is.srtt).count(),
        std::chrono::duration_cast<std::chrono::microseconds>(ts.srtt).count());
    row("RTO (us)", std::chrono::duration_cast<std::chrono::microseconds>(is.rto).count(),
        std::chrono::duration_cast<std::chrono::microseconds>(ts.rto).count());
    row("congestion window", is.cwnd, ts.cwnd);
    row("max frames in flight", is.max_in_flight, ts.max_in_flight);
    row("window ever exceeded", is.window_violated ? "yes" : "no",
        ts.window_violated ? "yes" : "no");
    const auto ab = link.a->tx_link_stats();
    const auto ba = link.b->tx_link_stats();
    fmt::print(
        "\nlink (initiator->target / target->initiator): lost {}/{}, duplicated {}/{}, "
        "reordered {}/{}\n",
        ab.lost, ba.lost, ab.duplicated, ba.duplicated, ab.reordered, ba.reordered);
  }

  Options opt_;
  std::mt19937_64 rng_;
  uint32_t slice_blocks_ = 0;
  std::vector<uint8_t> disk_;   // the target's RAM disk
  std::vector<uint8_t> model_;  // what the initiator expects the disk to hold
  std::vector<std::optional<Command>> inflight_;
  std::array<bool, 512> written_any_{};
  uint32_t next_cmd_sn_ = 1;
  uint32_t issued_ = 0, completed_ = 0;
  uint64_t executed_writes_ = 0, executed_reads_ = 0;
  uint64_t mismatches_ = 0, failures_ = 0, bytes_moved_ = 0;
  std::vector<double> latencies_us_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"HyperSCSI demo: SCSI-like PDUs over the in-memory link with impairments"};
  app.add_option("--commands", o.commands, "commands to complete")->check(CLI::Range(1u, 1000000u));
  app.add_option("--queue-depth", o.queue_depth, "commands in flight")->check(CLI::Range(1u, 512u));
  app.add_option("--max-kib", o.max_kib, "largest transfer, KiB")->check(CLI::Range(1u, 1024u));
  app.add_option("--mtu", o.mtu, "link MTU")->check(CLI::Range(576, 9000));
  app.add_option("--loss", o.loss, "frame loss probability per direction")
      ->check(CLI::Range(0.0, 0.5));
  app.add_option("--reorder", o.reorder, "reordering probability")->check(CLI::Range(0.0, 0.5));
  app.add_option("--duplicate", o.duplicate, "duplication probability")
      ->check(CLI::Range(0.0, 0.5));
  app.add_option("--seed", o.seed, "seed of the impairments and the workload");
  app.add_option("--time-limit", o.time_limit_s, "give up after this many seconds");
  CLI11_PARSE(app, argc, argv);
  return Demo(o).run();
}
