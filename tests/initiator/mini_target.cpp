#include "mini_target.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "hyperscsi/io/port_sink.h"
#include "hyperscsi/proto/bytes.h"
#include "hyperscsi/proto/frame.h"

namespace hyperscsi::test {

using namespace proto::bytes;

namespace {
std::vector<uint8_t> sense(uint8_t key, uint8_t asc, uint8_t ascq = 0) {
  std::vector<uint8_t> s(18, 0);
  s[0] = 0x70;
  s[2] = key;
  s[7] = 10;
  s[12] = asc;
  s[13] = ascq;
  return s;
}
}  // namespace

MiniTarget::MiniTarget(std::unique_ptr<io::Port> port, MiniTargetConfig config)
    : port_(std::move(port)), config_(std::move(config)) {
  disk_.assign(config_.num_blocks * config_.block_size, 0);
  endpoint_ = make_endpoint();
  thread_ = std::thread([this] { run(); });
}

MiniTarget::~MiniTarget() {
  stop_ = true;
  thread_.join();
}

void MiniTarget::restart() {
  restart_ = true;
}

std::vector<uint8_t> MiniTarget::snapshot() const {
  std::lock_guard lock(disk_mutex_);
  return disk_;
}

std::unique_ptr<proto::TargetEndpoint> MiniTarget::make_endpoint() {
  proto::TargetConfig cfg;
  cfg.local_mac = port_->mac();
  cfg.target_name = config_.name;
  cfg.limits.mtu =
      config_.advertised_mtu ? config_.advertised_mtu : static_cast<uint16_t>(port_->mtu());
  cfg.limits.max_transfer = config_.max_transfer;
  cfg.limits.keepalive_ms = 200;
  cfg.limits.dead_time_ms = config_.dead_time_ms;
  cfg.seed = 1000 + ++generation_;
  const proto::LoginStatus answer = config_.login_answer;
  const proto::LunInfo lun0{0, false, config_.block_size, config_.num_blocks};
  return std::make_unique<proto::TargetEndpoint>(
      cfg, [answer](const proto::LoginRequest&, const proto::MacAddress&) { return answer; },
      [lun0](std::string_view, const proto::MacAddress&) { return std::vector{lun0}; });
}

void MiniTarget::run() {
  io::PortSink sink(*port_, 1024);
  std::vector<io::Packet> rx(64);
  while (!stop_) {
    if (restart_.exchange(false)) endpoint_ = make_endpoint();
    const auto now = std::chrono::steady_clock::now();
    const size_t n = port_->rx_burst(std::span<io::Packet>(rx));
    for (size_t i = 0; i < n; ++i) {
      auto f = proto::decode_frame(rx[i].bytes());
      if (f) endpoint_->on_frame(f.value(), now);
      rx[i].reset();
    }
    while (auto cmd = endpoint_->pop_command())
      if (cmd->needs_execution()) execute(*cmd, now);
    endpoint_->poll(now, sink);
    sink.flush();
    if (n == 0) port_->wait_rx(std::chrono::microseconds(200));
  }
}

void MiniTarget::execute(const proto::IncomingCommand& cmd, proto::TimePoint) {
  const auto cdb = cmd.header.cdb_view();
  proto::ReplyHeader reply;
  reply.cmd_sn = cmd.header.cmd_sn;
  std::vector<uint8_t> data;
  bool reexecutable = false;
  const uint32_t bs = config_.block_size;
  auto check = [&](std::vector<uint8_t> s) {
    reply.status = 0x02;
    reply.sense = std::move(s);
  };
  const uint8_t op = cdb.empty() ? 0xff : cdb[0];
  if (cmd.header.lun != 0 && op != 0x12) {
    check(sense(0x05, 0x25));
  } else {
    switch (op) {
      case 0x28:
      case 0x88:
      case 0x2a:
      case 0x8a: {
        const bool is16 = op == 0x88 || op == 0x8a;
        if (cdb.size() < (is16 ? 16u : 10u)) {
          check(sense(0x05, 0x24));
          break;
        }
        const uint64_t lba = is16 ? load_be64(&cdb[2]) : load_be32(&cdb[2]);
        const uint32_t blocks = is16 ? load_be32(&cdb[10]) : load_be16(&cdb[7]);
        if (lba + blocks > config_.num_blocks) {
          check(sense(0x05, 0x21));
          break;
        }
        const size_t bytes = size_t{blocks} * bs;
        std::lock_guard lock(disk_mutex_);
        if (op == 0x28 || op == 0x88) {
          data.assign(disk_.begin() + static_cast<ptrdiff_t>(lba * bs),
                      disk_.begin() + static_cast<ptrdiff_t>(lba * bs + bytes));
          reexecutable = true;
        } else {
          if (cmd.data_out().size() != bytes) {
            check(sense(0x05, 0x24));
            break;
          }
          std::memcpy(disk_.data() + lba * bs, cmd.data_out().data(), bytes);
          ++writes_;
        }
        break;
      }
      case 0x25:
        data.assign(8, 0);
        store_be32(&data[0], static_cast<uint32_t>(config_.num_blocks - 1));
        store_be32(&data[4], bs);
        break;
      case 0x12: {
        data.assign(96, ' ');
        data[0] = cmd.header.lun == 0 ? 0x00 : 0x7f;
        data[1] = 0;
        data[2] = 0x06;
        data[3] = 0x02;
        data[4] = 91;
        data[5] = data[6] = data[7] = 0;
        std::memcpy(&data[8], "HSCSITST", 8);
        std::memcpy(&data[16], "MiniTarget RAM  ", 16);
        std::memcpy(&data[32], "0001", 4);
        break;
      }
      case 0x35:
        break;
      case 0x42: {
        const auto p = cmd.data_out();
        if (p.size() < 24) {
          check(sense(0x05, 0x1a));
          break;
        }
        const uint64_t lba = load_be64(&p[8]);
        const uint32_t blocks = load_be32(&p[16]);
        if (lba + blocks > config_.num_blocks) {
          check(sense(0x05, 0x21));
          break;
        }
        std::lock_guard lock(disk_mutex_);
        std::fill_n(disk_.begin() + static_cast<ptrdiff_t>(lba * bs), size_t{blocks} * bs, 0);
        break;
      }
      default:
        check(sense(0x05, 0x20));
        break;
    }
  }
  if (data.size() > cmd.header.expected_data_in) {
    reply.residual = static_cast<uint32_t>(data.size() - cmd.header.expected_data_in);
    reply.flags |= proto::kReplyFlagOverflow;
    data.resize(cmd.header.expected_data_in);
  } else if (data.size() < cmd.header.expected_data_in) {
    reply.residual = static_cast<uint32_t>(cmd.header.expected_data_in - data.size());
    reply.flags |= proto::kReplyFlagUnderflow;
  }
  reply.data_in_length = static_cast<uint32_t>(data.size());
  std::vector<uint8_t> pdu;
  proto::encode(reply, pdu);
  pdu.insert(pdu.end(), data.begin(), data.end());
  ++executed_;
  endpoint_->send_reply(cmd.session_id, cmd.tag, cmd.header.cmd_sn, std::move(pdu), reexecutable);
}

}  // namespace hyperscsi::test
