// A real exchange, recorded and dissected: the initiator library talks to the
// real target engine over a lossy in-memory link whose initiator end is
// wrapped by io's recording port. tshark with tools/wireshark/hyperscsi.lua
// must decode every recorded frame without an error, show the SCSI commands
// that were issued (INQUIRY, WRITE, READ) and the CHECK CONDITION of a read
// past the end, and mark every frame sent with RETRANSMIT as a retransmission.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/initiator/initiator.h"
#include "hyperscsi/io/mem_link.h"
#include "hyperscsi/io/pcap_port.h"
#include "hyperscsi/store/block_store.h"
#include "tshark_util.h"

namespace hyperscsi::initiator {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace hyperscsi::test_wireshark;

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

TEST(DissectorRealExchange, RecordedSessionDecodesWithoutErrors) {
  if (!have_tshark()) {
    GTEST_SKIP() << "tshark is not installed (scripts/setup.sh installs it; CI must not skip)";
  }
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const fs::path pcap = dir.path() / "session.pcap";
  const fs::path image = dir.path() / "lun0.img";

  io::MemLinkConfig link_cfg;
  link_cfg.a_to_b.loss = 0.03;  // seeded: some frames are sent again
  link_cfg.b_to_a.loss = 0.03;
  link_cfg.seed = 23;
  auto link = io::make_mem_link(link_cfg);
  ASSERT_TRUE(link.ok());
  auto recorded = io::make_recording_port(std::move(link->a), pcap.string());
  ASSERT_TRUE(recorded.ok()) << recorded.error().message;

  engine::EngineConfig ecfg;
  ecfg.target_name = "wstgt";
  ecfg.seed = 7;
  std::vector<std::unique_ptr<io::Port>> ports;
  ports.push_back(std::move(link->b));
  auto engine = std::make_unique<engine::TargetEngine>(ecfg, std::move(ports));
  store::StoreOptions so;
  so.create_size = 4u << 20;
  auto st = store::open_store(image.string(), so);
  ASSERT_TRUE(st.ok()) << st.error().message;
  hyperscsi::scsi::LuConfig lc;
  lc.target_name = "wstgt";
  engine::LunDefinition def;
  def.lun = 0;
  def.unit = std::make_unique<hyperscsi::scsi::LogicalUnit>(lc, std::move(st.value()));
  ASSERT_TRUE(engine->add_lun(std::move(def)).ok());
  ASSERT_TRUE(engine->start().ok());

  uint64_t blocks = 0;
  {
    Options o;
    o.seed = 3;
    o.discovery_window = 300ms;
    o.initiator_name = "wsini";
    auto ini = Initiator::create(std::move(recorded.value()), o);
    ASSERT_TRUE(ini.ok());
    std::unique_ptr<Initiator> initiator = std::move(ini.value());
    // Discovery and login retry by themselves; a few rounds more keep a
    // lossy link from failing the test.
    bool connected = false;
    for (int attempt = 0; attempt < 3 && !connected; ++attempt) {
      connected = initiator->connect("wstgt").ok();
    }
    ASSERT_TRUE(connected);
    auto lun = initiator->open_lun(0);
    ASSERT_TRUE(lun.ok()) << lun.error().message;
    ASSERT_TRUE(lun->inquiry().ok());
    blocks = lun->capacity().num_blocks;
    std::vector<uint8_t> data(64 * 1024);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
    ASSERT_TRUE(lun->write_sync(16, data).ok());
    auto back = lun->read_sync(16, static_cast<uint32_t>(data.size() / 512));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_TRUE(*back == data);
    // A read past the end: CHECK CONDITION, ILLEGAL REQUEST, LBA out of range.
    ScsiCommand past;
    past.cdb = scsi::read_cdb(blocks + 8, 1);
    past.data_in_length = 512;
    CommandResult r = initiator->execute(std::move(past)).get();
    EXPECT_EQ(r.status, 0x02) << r.describe();
    initiator->disconnect();
  }  // the initiator and its recording port are gone: the capture is closed
  engine->stop();
  engine.reset();

  // Every recorded frame is ours and none is flagged as an error.
  const auto [count, st0] = run(tshark(pcap, "-T fields -e frame.number", dir.path() / "e0"));
  ASSERT_EQ(st0, 0) << slurp(dir.path() / "e0");
  const size_t frames = lines_of(count).size();
  EXPECT_GT(frames, 50u);
  const auto [ours, st1] =
      run(tshark(pcap, "-Y hyperscsi2 -T fields -e frame.number", dir.path() / "e1"));
  ASSERT_EQ(st1, 0);
  EXPECT_EQ(lines_of(ours).size(), frames);
  const auto [errors, st2] =
      run(tshark(pcap,
                 "-Y '_ws.malformed || _ws.expert.severity >= error || hyperscsi2.malformed || "
                 "hyperscsi2.crc32.bad' -T fields -e frame.number -e _ws.expert.message",
                 dir.path() / "e2"));
  ASSERT_EQ(st2, 0) << slurp(dir.path() / "e2");
  EXPECT_EQ(errors, "") << "frames flagged as errors";

  // What was exchanged is visible by name and value.
  auto matching = [&](const std::string& filter) {
    const auto [out, s] =
        run(tshark(pcap, "-Y '" + filter + "' -T fields -e frame.number", dir.path() / "e3"));
    EXPECT_EQ(s, 0) << filter << ": " << slurp(dir.path() / "e3");
    return lines_of(out).size();
  };
  EXPECT_GE(matching("hyperscsi2.opcode == 0x30 && hyperscsi2.initiator_name == \"wsini\""), 1u);
  EXPECT_GE(matching("hyperscsi2.opcode == 0x10 && hyperscsi2.target_name == \"wstgt\" && "
                     "hyperscsi2.lun_count == 1"),
            1u);
  EXPECT_GE(matching("hyperscsi2.login.status == 0 && hyperscsi2.login.session_id != 0"), 1u);
  EXPECT_GE(matching("hyperscsi2.cdb.opcode == 0x12"), 1u);  // INQUIRY
  EXPECT_GE(matching("(hyperscsi2.cdb.opcode == 0x2a || hyperscsi2.cdb.opcode == 0x8a) && "
                     "hyperscsi2.cdb.lba == 16 && "
                     "hyperscsi2.cdb.transfer_length == 128"),
            1u);
  EXPECT_GE(matching("(hyperscsi2.cdb.opcode == 0x28 || hyperscsi2.cdb.opcode == 0x88) && "
                     "hyperscsi2.cdb.lba == 16"),
            1u);
  EXPECT_GE(matching("hyperscsi2.cdb.lba == " + std::to_string(blocks + 8)), 1u);
  EXPECT_GE(matching("hyperscsi2.reply.status == 2 && hyperscsi2.sense.key == 5 && "
                     "hyperscsi2.sense.asc == 0x21"),
            1u);
  EXPECT_GE(matching("hyperscsi2.opcode == 0x13"), 1u);  // disconnect
  // Data-out spread over fragments: later fragments carry no CDB.
  EXPECT_GE(matching("hyperscsi2.opcode == 0 && hyperscsi2.pdu_offset > 0 && !hyperscsi2.cdb"), 1u);
  // Every frame sent with RETRANSMIT is marked (whether loss caused any).
  EXPECT_EQ(matching("hyperscsi2.flags.retransmit == 1 && !hyperscsi2.retransmission"), 0u);
  std::printf("recorded %zu frames, %zu sent again with RETRANSMIT, %zu marked retransmissions\n",
              frames, matching("hyperscsi2.flags.retransmit == 1"),
              matching("hyperscsi2.retransmission"));
}

}  // namespace
}  // namespace hyperscsi::initiator
