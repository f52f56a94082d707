#include "hyperscsi/ports/open_port.h"

#include <gtest/gtest.h>

#include <vector>

#include "hyperscsi/io/port.h"
#include "test_frames.h"  // tests/io

namespace hyperscsi::ports {
namespace {

using io::MacAddress;
using io::Packet;
using io::PortErrorKind;
namespace testing = io::testing;

TEST(OpenPort, MemSpecOpensBothEndsOfALink) {
  auto a = open_port("mem:op1?seed=7,mtu=9000,loss=0,dup=0,reorder=0,delay_us=0");
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = open_port("mem:op1");
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ((*a)->mtu(), 9000u);
  Packet p = (*a)->alloc();
  ASSERT_TRUE(testing::fill_frame(p, (*b)->mac(), (*a)->mac(), 42, 9014));
  std::vector<Packet> v;
  v.push_back(std::move(p));
  EXPECT_EQ((*a)->tx_burst(v), 1u);
  std::vector<Packet> got(4);
  ASSERT_EQ((*b)->rx_burst(got), 1u);
  EXPECT_EQ(testing::frame_seq(got[0]), 42u);
  EXPECT_TRUE(testing::frame_intact(got[0]));
}

TEST(OpenPort, UnknownKindIsABadSpecListingTheValidKinds) {
  auto r = open_port("carrierpigeon:eth0");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, PortErrorKind::kBadSpec);
  EXPECT_NE(r.error().message.find("carrierpigeon"), std::string::npos);
  EXPECT_NE(r.error().message.find("afpacket"), std::string::npos);
  EXPECT_NE(r.error().message.find("mem"), std::string::npos);
}

TEST(OpenPort, SpecWithoutKindOrInterfaceIsABadSpec) {
  auto r = open_port("eth0");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, PortErrorKind::kBadSpec);
  EXPECT_NE(r.error().message.find("eth0"), std::string::npos);
  r = open_port("afpacket:");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, PortErrorKind::kBadSpec);
  r = open_port("pcap:");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, PortErrorKind::kBadSpec);
}

TEST(OpenPort, ToStringHelpers) {
  EXPECT_EQ(io::to_string(MacAddress{0x02, 0x48, 0x53, 0x00, 0x0a, 0xff}), "02:48:53:00:0a:ff");
  EXPECT_EQ(io::to_string(PortErrorKind::kNoSuchInterface), "no such interface");
  EXPECT_EQ(io::to_string(PortErrorKind::kPermission), "permission denied");
}

}  // namespace
}  // namespace hyperscsi::ports
