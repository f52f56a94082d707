# CPack: Debian packages from the components of cmake/Install.cmake.
#   cpack -G DEB --config BUILD/CPackConfig.cmake -B OUTDIR
# gives hyperscsi-target_VERSION_ARCH.deb, hyperscsi-client_VERSION_ARCH.deb
# and, when DPDK is built, hyperscsi-dpdk_VERSION_ARCH.deb: the DPDK module,
# the only file that needs DPDK's libraries (and an SSE4.2 CPU). The target
# recommends it, the client suggests it; neither depends on DPDK.
# and (built with the rbd store) hyperscsi-target-rbd_VERSION_ARCH.deb.
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "hyperscsi")
set(CPACK_PACKAGE_VENDOR "HyperSCSI project")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "SCSI over raw Ethernet (HyperSCSI)")
set(CPACK_PACKAGE_CONTACT "HyperSCSI maintainers <hyperscsi@example.org>")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
# Only the packaged components: the /etc seeding of a plain `cmake --install`
# (hyperscsi-target-config) is the target package's postinst here, and the
# rules of target/daemon/CMakeLists.txt without a component stay out.
set(CPACK_COMPONENTS_ALL hyperscsi-target hyperscsi-client)
if(TARGET hyperscsi_dpdk_port_module)
  list(APPEND CPACK_COMPONENTS_ALL hyperscsi-dpdk)
endif()
if(TARGET hyperscsi-store-rbd)
  list(APPEND CPACK_COMPONENTS_ALL hyperscsi-target-rbd)
endif()

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# dpkg-shlibdeps fills Depends from the shared libraries the programs link.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS OFF)

set(CPACK_DEBIAN_HYPERSCSI-TARGET_PACKAGE_NAME "hyperscsi-target")
set(CPACK_DEBIAN_HYPERSCSI-TARGET_DESCRIPTION
    "HyperSCSI target: serves SCSI LUNs over raw Ethernet\n\
hyperscsi-target exports files, block devices and RAM disks as SCSI logical\n\
units over HyperSCSI (EtherType 0x889A, no TCP/IP), with access lists, a\n\
control socket for statistics and a systemd unit.")
# Maintainer scripts: seed /etc/hyperscsi/target.toml from the example when
# absent (never replacing an operator's file), remove it on purge.
set(_hs_deb_scripts "${CMAKE_BINARY_DIR}/cpack-deb/hyperscsi-target")
file(WRITE "${_hs_deb_scripts}/postinst" [=[#!/bin/sh
set -e
if [ "$1" = configure ]; then
  example=/usr/share/doc/hyperscsi-target/examples/target.toml
  if [ ! -e /etc/hyperscsi/target.toml ] && [ -e "$example" ]; then
    mkdir -p /etc/hyperscsi
    cp "$example" /etc/hyperscsi/target.toml
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
  fi
fi
exit 0
]=])
file(WRITE "${_hs_deb_scripts}/postrm" [=[#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -f /etc/hyperscsi/target.toml
  rmdir /etc/hyperscsi 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
]=])
set(CPACK_DEBIAN_HYPERSCSI-TARGET_PACKAGE_CONTROL_EXTRA
    "${_hs_deb_scripts}/postinst;${_hs_deb_scripts}/postrm")
set(CPACK_DEBIAN_HYPERSCSI-TARGET_PACKAGE_CONTROL_STRICT_PERMISSION ON)
if(TARGET hyperscsi_dpdk_port_module)
  # The module must come from the same build (the loader checks its build id).
  set(CPACK_DEBIAN_HYPERSCSI-TARGET_PACKAGE_RECOMMENDS "hyperscsi-dpdk (= ${PROJECT_VERSION})")
endif()
# The rbd: store is its own package: the daemon never links librbd.
set(CPACK_DEBIAN_HYPERSCSI-TARGET_PACKAGE_SUGGESTS "hyperscsi-target-rbd")

set(CPACK_DEBIAN_HYPERSCSI-TARGET-RBD_PACKAGE_NAME "hyperscsi-target-rbd")
set(CPACK_DEBIAN_HYPERSCSI-TARGET-RBD_DESCRIPTION
    "HyperSCSI target: Ceph RBD images as LUNs (rbd:POOL/IMAGE)\n\
The rbd: backing store of hyperscsi-target, loaded only when a LUN is an RBD\n\
image: hyperscsi-target becomes a gateway in front of a Ceph pool through\n\
librbd (several gateways may export one image).")
# dpkg-shlibdeps adds librbd1 and librados2; the module must match the daemon.
set(CPACK_DEBIAN_HYPERSCSI-TARGET-RBD_PACKAGE_DEPENDS "hyperscsi-target (= ${CPACK_PACKAGE_VERSION})")

set(CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_NAME "hyperscsi-client")
set(CPACK_DEBIAN_HYPERSCSI-CLIENT_DESCRIPTION
    "HyperSCSI initiator: use remote SCSI LUNs over raw Ethernet\n\
hyperscsi-attach discovers HyperSCSI targets, sends raw CDBs and attaches a\n\
remote LUN as a local file (FUSE) and loop block device. The nbdkit plugin\n\
(nbdkit hyperscsi port=... lun=...) serves a LUN to NBD clients.")
# fusermount3 for attach/detach; nbdkit to load the plugin.
set(CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_DEPENDS "fuse3")
set(CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_RECOMMENDS "nbdkit")
set(CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_SUGGESTS "wireshark | tshark, initramfs-tools, nbd-client")
# The initramfs hook: a dpkg trigger rebuilds the initramfs when the package
# (and so the hook, the boot script or hyperscsi-attach) changes; the unit
# template needs a daemon-reload.
set(_hs_client_scripts "${CMAKE_BINARY_DIR}/cpack-deb/hyperscsi-client")
file(WRITE "${_hs_client_scripts}/triggers" "activate-noawait update-initramfs\n")
file(WRITE "${_hs_client_scripts}/postinst" [=[#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
]=])
file(WRITE "${_hs_client_scripts}/postrm" [=[#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
]=])
set(CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_CONTROL_EXTRA
    "${_hs_client_scripts}/postinst;${_hs_client_scripts}/postrm;${_hs_client_scripts}/triggers")
set(CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_CONTROL_STRICT_PERMISSION ON)
if(TARGET hyperscsi_dpdk_port_module)
  string(APPEND CPACK_DEBIAN_HYPERSCSI-CLIENT_PACKAGE_SUGGESTS
         ", hyperscsi-dpdk (= ${PROJECT_VERSION})")
endif()

set(CPACK_DEBIAN_HYPERSCSI-DPDK_PACKAGE_NAME "hyperscsi-dpdk")
set(CPACK_DEBIAN_HYPERSCSI-DPDK_DESCRIPTION
    "HyperSCSI DPDK backend: dpdk: ports for hyperscsi-target and the client\n\
The DPDK poll-mode packet backend as a module that hyperscsi-target,\n\
hyperscsi-attach, hyperscsi-bench and the nbdkit plugin load only when a\n\
dpdk:EAL,ARGS port is opened. Needs an x86-64 CPU with SSE4.2 (DPDK's\n\
libraries are built for it); without this package the programs run anywhere\n\
and a dpdk: port is refused with a message.")
set(CPACK_DEBIAN_HYPERSCSI-DPDK_PACKAGE_ENHANCES "hyperscsi-target, hyperscsi-client")

include(CPack)
cpack_add_component(hyperscsi-target DISPLAY_NAME "HyperSCSI target daemon")
cpack_add_component(hyperscsi-client DISPLAY_NAME "HyperSCSI initiator tools")
cpack_add_component(hyperscsi-dpdk DISPLAY_NAME "HyperSCSI DPDK backend module")
if(TARGET hyperscsi-store-rbd)
  cpack_add_component(hyperscsi-target-rbd DISPLAY_NAME "HyperSCSI target: Ceph RBD store")
endif()
