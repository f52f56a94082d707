# Install layout a Debian user expects (with CMAKE_INSTALL_PREFIX=/usr, as the
# .deb packages use): programs in sbin/bin, the nbdkit plugin where `nbdkit
# hyperscsi` finds it, the systemd unit, examples, man pages, the Wireshark
# dissector. Every destination is relative to the install prefix, so
# `cmake --install BUILD --prefix DIR` never writes outside DIR.
#
# Components, one .deb each (cmake/Packaging.cmake):
#   hyperscsi-target      the daemon, its unit, example config, man page
#   hyperscsi-target-rbd  the rbd: store module (librbd, librados): apart, so
#                         the daemon's package does not pull in Ceph's libraries
#   hyperscsi-client      hyperscsi-attach, the nbdkit plugin, man page, dissector
#   hyperscsi-dpdk        the DPDK backend module (the only file linking librte_*)
include(GNUInstallDirs)

# nbdkit looks for nbdkit-NAME-plugin.so in its plugindir; keep the part below
# nbdkit's own prefix so the path follows our prefix.
set(_hs_nbdkit_dir "lib/nbdkit/plugins")
if(CMAKE_LIBRARY_ARCHITECTURE)
  set(_hs_nbdkit_dir "lib/${CMAKE_LIBRARY_ARCHITECTURE}/nbdkit/plugins")
endif()
pkg_get_variable(_hs_nbdkit_plugindir nbdkit plugindir)
pkg_get_variable(_hs_nbdkit_prefix nbdkit prefix)
if(_hs_nbdkit_plugindir AND _hs_nbdkit_prefix)
  file(RELATIVE_PATH _hs_nbdkit_dir "${_hs_nbdkit_prefix}" "${_hs_nbdkit_plugindir}")
endif()
set(HYPERSCSI_NBDKIT_PLUGIN_DIR "${_hs_nbdkit_dir}"
    CACHE STRING "nbdkit plugin directory, relative to the install prefix")

# Wireshark's global Lua plugin directory (tshark -G folders: "Global Lua Plugins").
set(_hs_ws_dir "lib/wireshark/plugins")
if(CMAKE_LIBRARY_ARCHITECTURE)
  set(_hs_ws_dir "lib/${CMAKE_LIBRARY_ARCHITECTURE}/wireshark/plugins")
endif()
set(HYPERSCSI_WIRESHARK_LUA_DIR "${_hs_ws_dir}"
    CACHE STRING "Wireshark global Lua plugin directory, relative to the install prefix")

# /usr/lib/systemd/system is /lib/systemd/system on merged-/usr Debian (bookworm on).
set(HYPERSCSI_SYSTEMD_UNIT_DIR "lib/systemd/system"
    CACHE STRING "systemd system unit directory, relative to the install prefix")

# Programs find the DPDK module (HYPERSCSI_PORT_MODULE_DIR, top level) through
# a RUNPATH relative to where they are installed, so any prefix works.
function(hyperscsi_module_runpath target installed_in)
  file(RELATIVE_PATH rel "/prefix/${installed_in}" "/prefix/${HYPERSCSI_PORT_MODULE_DIR}")
  set_target_properties(${target} PROPERTIES INSTALL_RPATH "$ORIGIN/${rel}")
endfunction()

set(_hs_daemon_dir "${PROJECT_SOURCE_DIR}/target/daemon")
set(_hs_man_dir "${PROJECT_SOURCE_DIR}/docs/man")

# Man pages are installed gzip -9n compressed, as Debian policy (12.3) asks;
# the hyperscsi-man target (part of ALL) makes BUILD/man/PAGE.gz.
find_program(HYPERSCSI_GZIP gzip REQUIRED)
add_custom_target(hyperscsi-man ALL)
function(hyperscsi_install_man page component)
  string(REGEX REPLACE "^.*\\.([1-9])$" "\\1" section "${page}")
  set(copy "${CMAKE_BINARY_DIR}/man/${page}")
  add_custom_command(OUTPUT "${copy}.gz"
                     COMMAND ${CMAKE_COMMAND} -E copy "${_hs_man_dir}/${page}" "${copy}"
                     COMMAND ${HYPERSCSI_GZIP} -9nf "${copy}"
                     DEPENDS "${_hs_man_dir}/${page}" VERBATIM)
  add_custom_target(hyperscsi-man-${page} DEPENDS "${copy}.gz")
  add_dependencies(hyperscsi-man hyperscsi-man-${page})
  install(FILES "${copy}.gz" DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section}
          COMPONENT ${component})
endfunction()

# --- hyperscsi-target ---
install(TARGETS hyperscsi-target RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR}
        COMPONENT hyperscsi-target)
hyperscsi_module_runpath(hyperscsi-target ${CMAKE_INSTALL_SBINDIR})
install(FILES ${_hs_daemon_dir}/hyperscsi-target.service
        DESTINATION ${HYPERSCSI_SYSTEMD_UNIT_DIR} COMPONENT hyperscsi-target)
install(FILES ${_hs_daemon_dir}/example.toml DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/hyperscsi-target/examples
        RENAME target.toml COMPONENT hyperscsi-target)
# The unit's Documentation= points here.
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/hyperscsi
        COMPONENT hyperscsi-target)
hyperscsi_install_man(hyperscsi-target.8 hyperscsi-target)

# --- hyperscsi-target-rbd: found by the daemon at <prefix>/<libdir>/hyperscsi ---
if(TARGET hyperscsi-store-rbd)
  install(TARGETS hyperscsi-store-rbd LIBRARY DESTINATION ${HYPERSCSI_STORE_MODULE_SUBDIR}
          COMPONENT hyperscsi-target-rbd)
endif()

# The unit reads /etc/hyperscsi/target.toml. A plain `cmake --install` seeds it
# from the example only when absent, so an operator's file is never replaced.
# Prefix /usr means /etc (as GNUInstallDirs has it); any other prefix PREFIX/etc.
# Its own component: the .deb does this in its postinst instead (a conffile
# would be started by systemd with the example's made-up devices).
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(_hs_etc \"/etc/hyperscsi\")
  else()
    set(_hs_etc \"\${CMAKE_INSTALL_PREFIX}/etc/hyperscsi\")
  endif()
  set(_hs_conf \"\$ENV{DESTDIR}\${_hs_etc}/target.toml\")
  if(EXISTS \"\${_hs_conf}\")
    message(STATUS \"Keeping existing: \${_hs_conf}\")
  else()
    message(STATUS \"Installing: \${_hs_conf}\")
    file(MAKE_DIRECTORY \"\$ENV{DESTDIR}\${_hs_etc}\")
    file(COPY_FILE \"${_hs_daemon_dir}/example.toml\" \"\${_hs_conf}\")
  endif()
" COMPONENT hyperscsi-target-config)

# --- hyperscsi-client ---
install(TARGETS hyperscsi-attach RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT hyperscsi-client)
hyperscsi_module_runpath(hyperscsi-attach ${CMAKE_INSTALL_BINDIR})
install(TARGETS nbdkit-hyperscsi-plugin LIBRARY DESTINATION ${HYPERSCSI_NBDKIT_PLUGIN_DIR}
        COMPONENT hyperscsi-client)
hyperscsi_module_runpath(nbdkit-hyperscsi-plugin ${HYPERSCSI_NBDKIT_PLUGIN_DIR})
hyperscsi_install_man(hyperscsi-attach.8 hyperscsi-client)
if(EXISTS ${PROJECT_SOURCE_DIR}/tools/wireshark/hyperscsi.lua)
  install(FILES ${PROJECT_SOURCE_DIR}/tools/wireshark/hyperscsi.lua
          DESTINATION ${HYPERSCSI_WIRESHARK_LUA_DIR} COMPONENT hyperscsi-client)
endif()
# Diskless root and attachments at boot: the initramfs-tools hook, boot script
# and conf-hook (docs/operations.md section 3), the hyperscsi-attach@.service
# template and an example /etc/hyperscsi/attach.toml.
set(_hs_initramfs_dir "${PROJECT_SOURCE_DIR}/initiator/initramfs")
install(PROGRAMS ${_hs_initramfs_dir}/hooks/hyperscsi
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/initramfs-tools/hooks COMPONENT hyperscsi-client)
install(PROGRAMS ${_hs_initramfs_dir}/scripts/local-top/hyperscsi
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/initramfs-tools/scripts/local-top
        COMPONENT hyperscsi-client)
install(FILES ${_hs_initramfs_dir}/conf-hooks.d/hyperscsi
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/initramfs-tools/conf-hooks.d
        COMPONENT hyperscsi-client)
install(FILES ${PROJECT_SOURCE_DIR}/initiator/attach/hyperscsi-attach@.service
        DESTINATION ${HYPERSCSI_SYSTEMD_UNIT_DIR} COMPONENT hyperscsi-client)
install(FILES ${PROJECT_SOURCE_DIR}/initiator/attach/attach.example.toml
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/hyperscsi-client/examples RENAME attach.toml
        COMPONENT hyperscsi-client)
# The benchmark program, once bench/ builds one (its man page when written).
if(TARGET hyperscsi-bench)
  install(TARGETS hyperscsi-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
          COMPONENT hyperscsi-client)
  hyperscsi_module_runpath(hyperscsi-bench ${CMAKE_INSTALL_BINDIR})
  if(EXISTS ${_hs_man_dir}/hyperscsi-bench.1)
    hyperscsi_install_man(hyperscsi-bench.1 hyperscsi-client)
  endif()
endif()

# --- hyperscsi-dpdk ---
# The DPDK backend, loaded by the programs above only when a dpdk: port is opened.
if(TARGET hyperscsi_dpdk_port_module)
  install(TARGETS hyperscsi_dpdk_port_module LIBRARY DESTINATION ${HYPERSCSI_PORT_MODULE_DIR}
          COMPONENT hyperscsi-dpdk)
endif()
