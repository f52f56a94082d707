// Multipath sessions on the virtual-clock lab (multipath_lab.h): rates add
// over two paths, load follows capacity on uneven paths, a path going down
// and coming back (either direction), a lossy path beside a clean one,
// exactly-once under commands resent on another path, unreachable pairs,
// all paths down for a while, a protected session, and an idle path tried
// again (one measured in a bad moment is re-measured; a slow one is tried
// once per retry interval, no more).
#include <gtest/gtest.h>

#include "multipath_lab.h"

namespace hyperscsi::proto::mptest {
namespace {

constexpr uint32_t kExtentBlocks = 32;   // 128 KiB commands
constexpr uint64_t kReadRegion = 0;      // blocks [0, 4096): reads
constexpr uint64_t kWriteRegion = 4096;  // blocks [4096, 8192): writes
constexpr uint64_t kRegionExtents = 4096 / kExtentBlocks;

struct Stream {
  uint32_t read_qd = 0;
  uint32_t write_qd = 0;
  bool running = true;
  uint64_t next_read = 0;
  uint64_t next_write = 0;
  uint32_t version = 1;
  uint32_t reads_in_flight = 0;
  uint32_t writes_in_flight = 0;
  std::set<uint64_t> writing;  // extents with a write in flight (no overlapping I/O)
};

// Keeps read_qd reads and write_qd writes of 128 KiB in flight, reads over
// the read region and writes over the write region, round robin.
void attach_stream(Lab& lab, std::shared_ptr<Stream> s) {
  lab.workload = [s](Lab& l) {
    InitiatorHost& h = *l.initiator;
    uint32_t reads = 0, writes = 0;
    for (const auto& [tag, o] : h.by_tag) (o.write ? writes : reads)++;
    // Extents whose write completed are free again.
    std::set<uint64_t> busy;
    for (const auto& [tag, o] : h.by_tag)
      if (o.write) busy.insert(o.lba);
    s->writing = busy;
    if (!s->running) return;
    while (reads < s->read_qd && h.can_issue()) {
      const uint64_t lba = kReadRegion + (s->next_read++ % kRegionExtents) * kExtentBlocks;
      h.issue(false, lba, kExtentBlocks, 0, l.now);
      ++reads;
    }
    while (writes < s->write_qd && h.can_issue()) {
      const uint64_t lba = kWriteRegion + (s->next_write++ % kRegionExtents) * kExtentBlocks;
      if (s->writing.count(lba)) break;
      h.issue(true, lba, kExtentBlocks, s->version++, l.now);
      s->writing.insert(lba);
      ++writes;
    }
  };
}

// Reads back every extent of the write region and checks each holds the
// version of its last acknowledged write.
void verify_writes(Lab& lab) {
  lab.workload = nullptr;
  lab.run_for(seconds(2));  // let everything in flight finish
  InitiatorHost& h = *lab.initiator;
  ASSERT_EQ(h.in_flight(), 0u) << "commands still outstanding";
  const uint64_t before = h.completions.size();
  for (uint64_t e = 0; e < kRegionExtents; ++e) {
    const uint64_t lba = kWriteRegion + e * kExtentBlocks;
    if (!h.block_version.count(lba)) continue;
    // Reads verify against block_version in take_replies.
    while (!h.can_issue()) lab.run_for(milliseconds(1));
    h.issue(false, lba, kExtentBlocks, 0, lab.now);
    if (h.in_flight() >= 32) lab.run_for(milliseconds(5));
  }
  lab.run_for(seconds(2));
  EXPECT_EQ(h.in_flight(), 0u);
  EXPECT_GT(h.completions.size(), before);
}

void expect_exactly_once_writes(const TargetHost& t) {
  for (const auto& [sn, n] : t.executions)
    if (t.is_write.at(sn)) {
      EXPECT_EQ(n, 1) << "write cmd_sn " << sn << " executed " << n << " times";
    }
}

// Failover and correctness tests run their wires at 250 Mbit/s: the same
// behaviour in a quarter of the frames (the rate tests use 1 Gbit/s).
WireConfig slow_wire() {
  WireConfig w;
  w.rate_bps = 250e6;
  return w;
}

WireConfig gbit(double rate = 1e9) {
  WireConfig w;
  w.rate_bps = rate;
  return w;
}

// Goodput of a QD32 128 KiB stream (reads or writes) over the given wires.
double stream_goodput(const std::vector<WireConfig>& wires, bool writes, Lab** keep = nullptr) {
  LabConfig c;
  c.wires = wires;
  static std::unique_ptr<Lab> last;
  last = std::make_unique<Lab>(c);
  Lab& lab = *last;
  auto s = std::make_shared<Stream>();
  (writes ? s->write_qd : s->read_qd) = 32;
  attach_stream(lab, s);
  const TimePoint t0 = lab.now;
  lab.run_until(t0 + milliseconds(1200));
  const double g =
      goodput(lab.initiator->completions, t0 + milliseconds(200), t0 + milliseconds(1200));
  EXPECT_EQ(lab.initiator->errors, 0u);
  if (keep) *keep = &lab;
  return g;
}

TEST(Multipath, TwoPathsAggregateReadsAndWrites) {
  for (bool writes : {false, true}) {
    const double one = stream_goodput({gbit()}, writes);
    Lab* lab = nullptr;
    const double two = stream_goodput({gbit(), gbit()}, writes, &lab);
    lab->print_paths(writes ? "writes over two 1 Gbit/s paths" : "reads over two 1 Gbit/s paths");
    // Payload line rate of one path: 8960 of every 9038 bytes on the wire.
    const double line = 1e9 / 8 * 8960.0 / 9038.0;
    std::printf("  %s: one path %.1f MB/s, two paths %.1f MB/s (x%.2f; %.1f%% of 2x line rate)\n",
                writes ? "writes" : "reads", one / 1e6, two / 1e6, two / one,
                100 * two / (2 * line));
    EXPECT_GE(two, 1.9 * one);
    EXPECT_GE(two, 0.95 * 2 * line);
    // Both paths carried a fair share.
    const double b0 = static_cast<double>(lab->path_bytes(0));
    const double b1 = static_cast<double>(lab->path_bytes(1));
    EXPECT_GT(std::min(b0, b1) / std::max(b0, b1), 0.8);
  }
}

TEST(Multipath, UnevenPathsLoadFollowsCapacity) {
  const double fast = stream_goodput({gbit(1e9)}, false);
  const double slow = stream_goodput({gbit(100e6)}, false);
  for (bool writes : {false, true}) {
    Lab* lab = nullptr;
    const double both = stream_goodput({gbit(1e9), gbit(100e6)}, writes, &lab);
    lab->print_paths(writes ? "writes, 1 Gbit/s + 100 Mbit/s" : "reads, 1 Gbit/s + 100 Mbit/s");
    std::printf("  %s: 1G alone %.1f MB/s, 100M alone %.1f MB/s, both %.1f MB/s (%.1f%% of sum)\n",
                writes ? "writes" : "reads", fast / 1e6, slow / 1e6, both / 1e6,
                100 * both / (fast + slow));
    EXPECT_GE(both, 0.95 * (fast + slow));
    const double b0 = static_cast<double>(lab->path_bytes(0));
    const double b1 = static_cast<double>(lab->path_bytes(1));
    const double slow_share = b1 / (b0 + b1);
    EXPECT_GT(slow_share, 0.04);
    EXPECT_LT(slow_share, 0.16);
    // Commands were handed to execution in cmd_sn order: no hole skipped.
    EXPECT_EQ(lab->target->orderer.stats().gaps_skipped, 0u);
    EXPECT_TRUE(
        std::is_sorted(lab->target->execution_order.begin(), lab->target->execution_order.end()));
  }
}

// A path goes down in the middle of a read+write stream and comes back,
// twice: first the whole wire of path 1, then only the target-to-initiator
// direction of the login path (the target notices first). No error, every
// acknowledged write reads back, the stall stays under a second, and each
// path carries data again after it returns.
TEST(Multipath, PathDownAndBackMidStream) {
  LabConfig c;
  c.wires = {slow_wire(), slow_wire()};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 16;
  s->write_qd = 16;
  attach_stream(lab, s);
  const TimePoint t0 = lab.now;
  auto ms = [&](int n) { return t0 + milliseconds(n); };

  lab.run_until(ms(1000));
  lab.print_paths("before");
  ASSERT_EQ(lab.target->paths.transport().active_count(), 2u);
  const double before = goodput(lab.initiator->completions, ms(200), ms(1000));

  lab.wires[1]->set_up(false);  // cable of path 1 out
  lab.run_until(ms(1800));
  lab.print_paths("path 1 down");
  EXPECT_EQ(lab.initiator->paths.transport().state(1), PathState::kFailed);
  EXPECT_EQ(lab.target->paths.transport().state(1), PathState::kFailed);
  const double during = goodput(lab.initiator->completions, ms(1300), ms(1800));
  const Duration stall1 = longest_gap(lab.initiator->completions, ms(990), ms(1800));
  const uint64_t p1_before_return = lab.path_bytes(1);

  lab.wires[1]->set_up(true);
  lab.run_until(ms(2600));
  lab.print_paths("path 1 back");
  EXPECT_EQ(lab.initiator->paths.transport().state(1), PathState::kActive);
  EXPECT_GT(lab.path_bytes(1), p1_before_return + (4u << 20)) << "path 1 not used again";
  const double after = goodput(lab.initiator->completions, ms(2200), ms(2600));

  lab.wires[0]->t2i.set_up(false);  // replies on the login path vanish
  lab.run_until(ms(3400));
  lab.print_paths("path 0 target-to-initiator down");
  EXPECT_EQ(lab.initiator->paths.transport().state(0), PathState::kFailed);
  const Duration stall2 = longest_gap(lab.initiator->completions, ms(2590), ms(3400));
  const uint64_t p0_before_return = lab.path_bytes(0);
  EXPECT_GT(lab.target->paths.stats().leaves_sent + lab.initiator->paths.stats().leaves_sent, 0u);

  lab.wires[0]->t2i.set_up(true);
  lab.run_until(ms(4600));
  lab.print_paths("path 0 back");
  EXPECT_EQ(lab.initiator->paths.transport().state(0), PathState::kActive);
  EXPECT_GT(lab.path_bytes(0), p0_before_return + (4u << 20)) << "path 0 not used again";

  std::printf(
      "  goodput before %.1f MB/s, one path %.1f MB/s, after return %.1f MB/s; "
      "longest stall %.0f ms (path 1 down), %.0f ms (path 0 one-way down)\n",
      before / 1e6, during / 1e6, after / 1e6, seconds_of(stall1) * 1e3, seconds_of(stall2) * 1e3);
  EXPECT_LE(stall1, seconds(1));
  EXPECT_LE(stall2, seconds(1));
  EXPECT_GT(during, 0.8 * before / 2);
  EXPECT_GT(after, 0.8 * before);
  EXPECT_GE(lab.initiator->paths.candidates()[1].redemptions, 1u);
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
  EXPECT_EQ(lab.initiator->data_mismatches, 0u);
  expect_exactly_once_writes(*lab.target);
}

// A path that comes back is measured by its first few frames. When those
// crossed a loaded moment (MultipathE2e under CPU burners: the target's
// loops late, the initiator's turns late), its min_rtt stays high for good:
// only its own data can lower it, and with a high min_rtt it was never given
// any. Here wire 1 comes back with a 5 ms one-way delay that is restored
// right after path 1's first RTT sample, under a light stream (one read and
// one write of 128 KiB in flight, like the e2e test's sync workers). Path 1
// must be tried again, be re-measured and carry work.
TEST(Multipath, APathMeasuredInALoadedMomentIsTriedAgain) {
  LabConfig c;
  c.wires = {gbit(), gbit()};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 1;
  s->write_qd = 1;
  attach_stream(lab, s);
  const TimePoint t0 = lab.now;
  lab.run_until(t0 + seconds(1));
  ASSERT_EQ(lab.initiator->paths.transport().active_count(), 2u);

  lab.wires[1]->set_up(false);
  const TimePoint down_until = lab.now + seconds(2);
  while (lab.now < down_until && lab.initiator->paths.transport().state(1) != PathState::kFailed)
    lab.run_for(milliseconds(10));
  ASSERT_EQ(lab.initiator->paths.transport().state(1), PathState::kFailed);
  lab.run_for(milliseconds(300));

  // Back, slow for the first samples only.
  lab.wires[1]->set_delay(milliseconds(5));
  lab.wires[1]->set_up(true);
  const TimePoint back_by = lab.now + seconds(3);
  auto measured = [&] {
    const auto p = lab.initiator->paths.transport().path(1);
    return p && p->state == PathState::kActive && p->transport.min_rtt > Duration{};
  };
  while (lab.now < back_by && !measured()) lab.run_for(milliseconds(1));
  ASSERT_TRUE(measured()) << "path 1 neither active nor measured again";
  const Duration first_min_rtt = lab.initiator->paths.transport().path(1)->transport.min_rtt;
  lab.wires[1]->set_delay(microseconds(20));
  lab.print_paths("path 1 back, measured once through a 5 ms delay");

  const auto pdus = [&](uint8_t id) {
    return lab.initiator->paths.transport().path(id)->counters.pdus_sent;
  };
  const uint64_t p0 = pdus(0), p1 = pdus(1);
  const uint64_t b0 = lab.path_bytes(0), b1 = lab.path_bytes(1);
  lab.run_for(seconds(2));
  lab.print_paths("2 s later");
  const auto p = lab.initiator->paths.transport().path(1);
  const double share = static_cast<double>(lab.path_bytes(1) - b1) /
                       static_cast<double>(lab.path_bytes(0) - b0 + lab.path_bytes(1) - b1);
  std::printf(
      "  path 1: first min_rtt %.0f us, now %.0f us; commands in 2 s: path 0 %llu, path 1 %llu; "
      "path 1's share of the bytes %.0f%%\n",
      seconds_of(first_min_rtt) * 1e6, seconds_of(p->transport.min_rtt) * 1e6,
      (unsigned long long)(pdus(0) - p0), (unsigned long long)(pdus(1) - p1), 100 * share);
  EXPECT_GE(pdus(1) - p1, 20u) << "path 1 came back but carries nothing";
  EXPECT_LT(p->transport.min_rtt, milliseconds(1)) << "path 1 was never re-measured";
  EXPECT_GT(share, 0.2);
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
}

// The other side of that retry: a path that really is slow (5 ms one way
// beside a 20 us path) under the same light stream gets a PDU about once per
// kRetryIdlePath (200 ms) when idle, no more: tried, not used.
TEST(Multipath, ASlowIdlePathIsTriedOncePerRetryInterval) {
  LabConfig c;
  c.wires = {gbit(), gbit()};
  c.wires[1].delay = milliseconds(5);
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 1;
  s->write_qd = 1;
  attach_stream(lab, s);
  lab.run_for(seconds(1));
  ASSERT_EQ(lab.initiator->paths.transport().active_count(), 2u);
  const auto pdus = [&](uint8_t id) {
    return lab.initiator->paths.transport().path(id)->counters.pdus_sent;
  };
  const uint64_t p0 = pdus(0), p1 = pdus(1);
  lab.run_for(seconds(2));
  lab.print_paths("path 1 at 5 ms one way");
  std::printf("  commands in 2 s: path 0 %llu, path 1 %llu\n", (unsigned long long)(pdus(0) - p0),
              (unsigned long long)(pdus(1) - p1));
  EXPECT_GE(pdus(1) - p1, 7u) << "the slow path is never tried";
  EXPECT_LE(pdus(1) - p1, 12u) << "the slow path is used beyond its retries";
  EXPECT_GT(pdus(0) - p0, 20 * (pdus(1) - p1));
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
}

// One path drops 20% of its frames in both directions beside a clean one:
// every byte arrives intact and the lossy path carries less.
TEST(Multipath, LossyPathBesideCleanOneCarriesLess) {
  LabConfig c;
  WireConfig lossy = slow_wire();
  lossy.loss = 0.20;
  c.wires = {lossy, slow_wire()};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 16;
  s->write_qd = 16;
  attach_stream(lab, s);
  lab.run_for(milliseconds(1500));
  lab.print_paths("20% loss on path 0");
  const uint64_t lossy_bytes = lab.path_bytes(0);
  const uint64_t clean_bytes = lab.path_bytes(1);
  EXPECT_LT(lossy_bytes, clean_bytes);
  EXPECT_GT(lab.wires[0]->i2t.dropped_loss + lab.wires[0]->t2i.dropped_loss, 100u);
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
  EXPECT_EQ(lab.initiator->data_mismatches, 0u);
  expect_exactly_once_writes(*lab.target);
}

// Commands that reached the target on a path whose acknowledgements then
// vanish are resent on the other path: the target recognises every
// duplicate by cmd_sn and executes no write twice. One extent is rewritten
// over and over (each write waits for the previous one), so a stale
// duplicate executing late would leave an old version behind.
TEST(Multipath, ExactlyOnceWhenCommandsAreResentOnAnotherPath) {
  LabConfig c;
  c.wires = {slow_wire(), slow_wire()};
  Lab lab(c);
  lab.target->exec_delay = milliseconds(2);  // duplicates can meet running commands
  auto s = std::make_shared<Stream>();
  s->write_qd = 24;
  attach_stream(lab, s);
  uint32_t hot_version = 1'000'000;
  const uint64_t hot = kWriteRegion + (kRegionExtents - 1) * kExtentBlocks;
  auto stream = lab.workload;
  lab.workload = [&, stream](Lab& l) {
    stream(l);
    bool hot_busy = false;
    for (const auto& [tag, o] : l.initiator->by_tag) hot_busy = hot_busy || o.lba == hot;
    if (s->running && !hot_busy && l.initiator->can_issue())
      l.initiator->issue(true, hot, kExtentBlocks, hot_version++, l.now);
  };
  const TimePoint t0 = lab.now;
  lab.run_until(t0 + milliseconds(500));
  // Acks and replies on path 0 vanish; its commands still arrive and run.
  for (int round = 0; round < 3; ++round) {
    lab.wires[round % 2]->t2i.set_up(false);
    lab.run_for(milliseconds(700));
    lab.wires[round % 2]->t2i.set_up(true);
    lab.run_for(milliseconds(1200));
  }
  lab.print_paths("after three one-way outages");
  s->running = false;
  verify_writes(lab);
  const auto& d = lab.target->decisions;
  auto count = [&](CacheDecision k) { return d.count(k) ? d.at(k) : 0; };
  std::printf("  cache decisions: execute %llu, replay %llu, in progress %llu, stale %llu\n",
              (unsigned long long)count(CacheDecision::kExecute),
              (unsigned long long)count(CacheDecision::kReplay),
              (unsigned long long)count(CacheDecision::kInProgress),
              (unsigned long long)count(CacheDecision::kStale));
  EXPECT_GT(count(CacheDecision::kReplay) + count(CacheDecision::kInProgress) +
                count(CacheDecision::kStale),
            0u)
      << "no command was resent on another path: the test did not test anything";
  EXPECT_GT(lab.initiator->paths.transport().stats().pdus_moved, 0u);
  expect_exactly_once_writes(*lab.target);
  EXPECT_EQ(lab.initiator->errors, 0u);
  EXPECT_EQ(lab.initiator->data_mismatches, 0u);
  // The hot extent holds its last acknowledged version.
  const uint32_t want = lab.initiator->block_version.at(hot);
  for (uint32_t i = 0; i < kExtentBlocks * kBlock; i += 4099)
    ASSERT_EQ(lab.target->disk[hot * kBlock + i], pattern(hot * kBlock + i, want));
}

// Two segments: initiator port 0 and target port 0 on one, ports 1 on the
// other. The cross pairs never get through and are reported unreachable;
// the others carry the stream.
TEST(Multipath, PairsOnDifferentSegmentsAreReportedUnreachable) {
  LabConfig c;
  c.wires = {slow_wire(), slow_wire()};
  c.extra_paths = {{1, 1}, {0, 1}, {1, 0}};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 32;
  attach_stream(lab, s);
  lab.run_for(seconds(2));
  int unreachable = 0, active = 0;
  for (const CandidateInfo& ci : lab.initiator->paths.candidates()) {
    std::printf("  candidate %u: %s\n", ci.id, std::string(to_string(ci.state)).c_str());
    unreachable += ci.state == CandidateState::kUnreachable;
    active += ci.state == CandidateState::kActive;
  }
  EXPECT_EQ(active, 2);
  EXPECT_EQ(unreachable, 2);
  EXPECT_EQ(lab.initiator->errors, 0u);
  EXPECT_GT(goodput(lab.initiator->completions, lab.start() + milliseconds(500),
                    lab.start() + seconds(2)),
            0.9 * 2 * 250e6 / 8 * 8960.0 / 9038.0);
  // The same pair twice is refused.
  auto dup = lab.initiator->paths.add_candidate(PathCandidate{imac(1), 9000, tmac(1)}, lab.now);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error(), PathError::kDuplicate);
}

// Every path down for two seconds: nothing completes, nothing fails; when
// the wires return the first path that answers takes the work at once.
TEST(Multipath, AllPathsDownThenBack) {
  LabConfig c;
  c.wires = {slow_wire(), slow_wire()};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 8;
  s->write_qd = 8;
  attach_stream(lab, s);
  const TimePoint t0 = lab.now;
  lab.run_until(t0 + milliseconds(500));
  for (auto& w : lab.wires) w->set_up(false);
  lab.run_until(t0 + milliseconds(2500));
  EXPECT_EQ(lab.initiator->paths.transport().active_count(), 0u);
  const size_t done_while_down = lab.initiator->completions.size();
  for (auto& w : lab.wires) w->set_up(true);
  lab.run_until(t0 + milliseconds(5500));
  lab.print_paths("after all paths were down for 2 s");
  EXPECT_EQ(lab.initiator->paths.transport().active_count(), 2u);
  TimePoint first_after{};
  for (const Completion& x : lab.initiator->completions)
    if (x.at > t0 + milliseconds(2500)) {
      first_after = x.at;
      break;
    }
  ASSERT_NE(first_after, TimePoint{});
  EXPECT_LE(first_after - (t0 + milliseconds(2500)), milliseconds(1500));
  EXPECT_GT(lab.initiator->completions.size(), done_while_down + 100);
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
  expect_exactly_once_writes(*lab.target);
}

// An authenticated session with per-frame integrity: joins carry proofs,
// each path generation seals with its own keys, and a path that failed
// comes back with new ones. A join with a wrong proof is refused.
TEST(Multipath, ProtectedSessionJoinsWithProofsAndPerPathKeys) {
  LabConfig c;
  c.wires = {slow_wire(), slow_wire()};
  SessionKeys k;
  k.protection = Protection::kIntegrity;
  k.initiator_to_target = crypto::SecretBytes(std::vector<uint8_t>(32, 0x11));
  k.target_to_initiator = crypto::SecretBytes(std::vector<uint8_t>(32, 0x22));
  k.salt_i2t = {1, 2, 3, 4};
  k.salt_t2i = {5, 6, 7, 8};
  c.keys = k;
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 8;
  s->write_qd = 8;
  attach_stream(lab, s);
  lab.run_for(milliseconds(600));
  ASSERT_EQ(lab.target->paths.transport().active_count(), 2u);
  lab.wires[1]->set_up(false);
  lab.run_for(milliseconds(800));
  lab.wires[1]->set_up(true);
  lab.run_for(milliseconds(1500));
  lab.print_paths("protected, path 1 down and back");
  const auto p1 = lab.target->paths.transport().path(1);
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1->state, PathState::kActive);
  EXPECT_GE(p1->gen, 2);
  for (const PathInfo& p : lab.target->paths.transport().paths()) {
    EXPECT_EQ(p.counters.protection_drops.bad_tag, 0u) << "path " << int(p.id);
    EXPECT_EQ(p.counters.protection_drops.unprotected, 0u) << "path " << int(p.id);
  }
  EXPECT_EQ(lab.target->paths.stats().auth_failures, 0u);

  // A join for path 5 whose proof was made with another key.
  PathRequest forged;
  forged.nonce = 99;
  forged.action = PathAction::kJoin;
  forged.path_id = 5;
  forged.path_gen = 1;
  forged.mtu = 9000;
  forged.window = 45;
  forged.proof.assign(kPathProofSize, 0xAB);
  FrameHeader h;
  h.src = imac(0);
  h.dst = tmac(0);
  h.common.opcode = Opcode::kPathRequest;
  h.ext.session_id = 0x5e551001;
  h.ext.epoch = 1;
  h.ext.path_id = 5;
  h.ext.path_gen = 1;
  std::vector<uint8_t> body;
  encode(forged, body);
  std::vector<uint8_t> frame(encoded_size(h, body.size()));
  frame.resize(encode_frame(frame, h, body));
  auto v = decode_frame(frame);
  ASSERT_TRUE(v.ok());
  FrameView opened;
  lab.target->paths.on_frame(v.value(), lab.now, opened);
  EXPECT_EQ(lab.target->paths.stats().auth_failures, 1u);
  EXPECT_FALSE(lab.target->paths.transport().has(5));

  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
  EXPECT_EQ(lab.initiator->data_mismatches, 0u);
}

// Each path uses its own MTU: a port set to 1500 beside 9000 ones makes a
// 1500-byte path that carries its share; a path through a switch that drops
// jumbo frames (both ports claim 9000) is reported as an MTU mismatch by name
// and left, and the others carry the stream.
TEST(Multipath, EachPathUsesItsOwnMtuAndAMismatchIsReported) {
  LabConfig c;
  WireConfig small = slow_wire();
  small.port_mtu = 1500;
  WireConfig narrow_switch = slow_wire();
  narrow_switch.max_frame = 1514;
  c.wires = {slow_wire(), small, narrow_switch};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 16;
  s->write_qd = 16;
  attach_stream(lab, s);
  lab.run_for(milliseconds(1200));
  lab.print_paths("9000, 1500, and 9000 through a 1500 switch");
  const auto cands = lab.initiator->paths.candidates();
  ASSERT_EQ(cands.size(), 3u);
  EXPECT_EQ(cands[1].state, CandidateState::kActive);
  EXPECT_EQ(cands[1].mtu, 1500);
  EXPECT_EQ(lab.initiator->paths.transport().path(1)->mtu, 1500);
  EXPECT_GT(lab.path_bytes(1), 8u << 20);
  EXPECT_EQ(cands[2].state, CandidateState::kMtuMismatch);
  EXPECT_EQ(cands[2].mtu, 9000);
  EXPECT_GT(lab.wires[2]->i2t.dropped_too_big + lab.wires[2]->t2i.dropped_too_big, 0u);
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
  EXPECT_EQ(lab.initiator->data_mismatches, 0u);
}

// A port taken out of the session in order (the operator removes a NIC)
// and put back: work moves off it without an error, the target is told, and
// the path returns under a newer generation of the same id.
TEST(Multipath, PathLeftInOrderAndAddedBack) {
  LabConfig c;
  c.wires = {slow_wire(), slow_wire()};
  Lab lab(c);
  auto s = std::make_shared<Stream>();
  s->read_qd = 16;
  s->write_qd = 16;
  attach_stream(lab, s);
  lab.run_for(milliseconds(500));
  ASSERT_TRUE(lab.initiator->paths.leave(1, lab.now).ok());
  EXPECT_FALSE(lab.initiator->paths.leave(1, lab.now).ok());
  lab.run_for(milliseconds(500));
  EXPECT_FALSE(lab.initiator->paths.transport().has(1));
  EXPECT_EQ(lab.target->paths.transport().state(1), PathState::kFailed);
  EXPECT_EQ(lab.target->paths.stats().leaves_received, 1u);
  const Duration gap =
      longest_gap(lab.initiator->completions, lab.now - milliseconds(500), lab.now);
  EXPECT_LT(gap, milliseconds(100));  // an orderly leave costs no stall
  auto id = lab.initiator->paths.add_candidate(PathCandidate{imac(1), 9000, tmac(1)}, lab.now);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id.value(), 1);
  lab.run_for(milliseconds(1000));
  EXPECT_EQ(lab.initiator->paths.transport().state(1), PathState::kActive);
  EXPECT_EQ(lab.target->paths.transport().generation(1), 2);
  EXPECT_EQ(lab.target->paths.stats().requests_refused, 0u);
  s->running = false;
  verify_writes(lab);
  EXPECT_EQ(lab.initiator->errors, 0u);
}

// 1500-byte MTU: many more frames per PDU; rates still add.
TEST(Multipath, TwoPathsAtMtu1500) {
  LabConfig c1;
  c1.mtu = 1500;
  c1.wires = {gbit()};
  LabConfig c2 = c1;
  c2.wires = {gbit(), gbit()};
  double g[2];
  for (int i = 0; i < 2; ++i) {
    Lab lab(i == 0 ? c1 : c2);
    auto s = std::make_shared<Stream>();
    s->read_qd = 32;
    attach_stream(lab, s);
    const TimePoint t0 = lab.now;
    lab.run_until(t0 + milliseconds(600));
    g[i] = goodput(lab.initiator->completions, t0 + milliseconds(100), t0 + milliseconds(600));
    EXPECT_EQ(lab.initiator->errors, 0u);
  }
  std::printf("  MTU 1500 reads: one path %.1f MB/s, two paths %.1f MB/s (x%.2f)\n", g[0] / 1e6,
              g[1] / 1e6, g[1] / g[0]);
  EXPECT_GE(g[1], 1.9 * g[0]);
}

// The candidate paths after a multipath login (docs/protocol.md 14.3).
TEST(CandidatePaths, PairsDiscoveryReachedOrEveryPairAndNeverTheLoginPair) {
  const std::vector<TargetPort> list = {{tmac(1), 9000}, {tmac(2), 1500}};
  // Two local ports, neither discovered: every pair but the login's.
  std::vector<LocalPort> locals = {{imac(1), 9000, std::nullopt}, {imac(2), 1500, std::nullopt}};
  auto all = candidate_paths(locals, list, imac(1), tmac(1));
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].local, imac(1));
  EXPECT_EQ((*all)[0].target, tmac(2));
  EXPECT_EQ((*all)[1].local, imac(2));
  EXPECT_EQ((*all)[1].target, tmac(1));
  EXPECT_EQ((*all)[1].local_mtu, 1500);  // each path its local port's MTU
  EXPECT_EQ((*all)[2].target, tmac(2));

  // Discovery per port: port 1 reached only target port 1, port 2 only
  // target port 2 (two separate segments): one more path, 2 x 2.
  locals[0].answered = std::vector<MacAddress>{tmac(1)};
  locals[1].answered = std::vector<MacAddress>{tmac(2)};
  auto seg = candidate_paths(locals, list, imac(1), tmac(1));
  ASSERT_TRUE(seg.ok());
  ASSERT_EQ(seg->size(), 1u);
  EXPECT_EQ((*seg)[0].local, imac(2));
  EXPECT_EQ((*seg)[0].target, tmac(2));

  // A port on which no reply came: none from it.
  locals[1].answered = std::vector<MacAddress>{};
  EXPECT_TRUE(candidate_paths(locals, list, imac(1), tmac(1))->empty());

  // Bad input: a port twice; the login's port missing.
  std::vector<LocalPort> twice = {{imac(1), 1500, std::nullopt}, {imac(1), 1500, std::nullopt}};
  auto dup = candidate_paths(twice, list, imac(1), tmac(1));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error(), CandidateError::kDuplicatePort);
  EXPECT_EQ(to_string(dup.error()), "the same port given twice");
  std::vector<LocalPort> other = {{imac(2), 1500, std::nullopt}};
  EXPECT_EQ(candidate_paths(other, list, imac(1), tmac(1)).error(), CandidateError::kNoLoginPort);

  // A target list naming a port twice gives one path; 16 x 16 pairs stop at
  // the 15 ids beside path 0.
  const std::vector<TargetPort> repeated = {{tmac(1), 1500}, {tmac(2), 1500}, {tmac(2), 1500}};
  locals[0].answered.reset();
  EXPECT_EQ(candidate_paths(std::span(locals).first(1), repeated, imac(1), tmac(1))->size(), 1u);
  std::vector<LocalPort> many;
  std::vector<TargetPort> wide;
  for (uint8_t i = 1; i <= 16; ++i) {
    many.push_back({imac(i), 1500, std::nullopt});
    wide.push_back({tmac(i), 1500});
  }
  EXPECT_EQ(candidate_paths(many, wide, imac(1), tmac(1))->size(), kMaxPaths - 1);
}

}  // namespace
}  // namespace hyperscsi::proto::mptest
