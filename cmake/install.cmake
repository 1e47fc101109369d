# What `cmake --install` puts under the prefix, all of it relocatable (nothing records the prefix
# the build was configured with, so a copied or moved tree keeps working):
#   include/lighthouse.h, lib/liblighthouse.so*, bin/lighthouse-compile, bin/lighthouse-bench,
#   lib/pkgconfig/lighthouse.pc                    (prefix found from the file's own place)
#   lib/cmake/lighthouse/lighthouse{Config,ConfigVersion,Targets,Targets-<config>}.cmake
#                                                  (find_package(lighthouse) -> lighthouse::lighthouse)
# The programs find the library through RUNPATH $ORIGIN/../lib (tools/CMakeLists.txt).
include(CMakePackageConfigHelpers)

set(LH_CMAKE_PACKAGE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lighthouse)
install(TARGETS lighthouse EXPORT lighthouseTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT lighthouseTargets NAMESPACE lighthouse:: DESTINATION ${LH_CMAKE_PACKAGE_DIR})
configure_package_config_file(cmake/lighthouseConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/lighthouseConfig.cmake
  INSTALL_DESTINATION ${LH_CMAKE_PACKAGE_DIR})
# The soname carries the major version, so any 0.x library serves a consumer of 0.y.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/lighthouseConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/lighthouseConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/lighthouseConfigVersion.cmake
        DESTINATION ${LH_CMAKE_PACKAGE_DIR})

# pkg-config: the installed file derives its prefix from ${pcfiledir}, its own directory. The
# build tree gets one of its own (build/lighthouse.pc: this build's library, the source header)
# for PKG_CONFIG_PATH=build.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(LH_PC_PREFIX ${CMAKE_INSTALL_PREFIX})   # absolute directories cannot move with the prefix
  set(LH_PC_LIBDIR ${CMAKE_INSTALL_FULL_LIBDIR})
  set(LH_PC_INCLUDEDIR ${CMAKE_INSTALL_FULL_INCLUDEDIR})
else()
  file(RELATIVE_PATH lh_pc_up /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
  string(REGEX REPLACE "/$" "" lh_pc_up "${lh_pc_up}")
  set(LH_PC_PREFIX "\${pcfiledir}/${lh_pc_up}")
  set(LH_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(LH_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(ffi/lighthouse.pc.in ${CMAKE_CURRENT_BINARY_DIR}/pkgconfig-install/lighthouse.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/pkgconfig-install/lighthouse.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

set(LH_PC_PREFIX ${CMAKE_CURRENT_BINARY_DIR})
set(LH_PC_LIBDIR "$<TARGET_FILE_DIR:lighthouse>")
set(LH_PC_INCLUDEDIR ${CMAKE_CURRENT_SOURCE_DIR}/ffi/include)
configure_file(ffi/lighthouse.pc.in ${CMAKE_CURRENT_BINARY_DIR}/lighthouse.pc.gen @ONLY)
file(GENERATE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/lighthouse.pc
     INPUT ${CMAKE_CURRENT_BINARY_DIR}/lighthouse.pc.gen)
