# CPU reference backend tests (included by tests/unit/CMakeLists.txt).
lh_add_check_test(test_golden test_golden.c test_util.c)
lh_add_check_test(test_properties test_properties.c test_util.c)
target_include_directories(test_golden PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# The dilated scorer against tests/golden-dilated (the same program on the other set).
lh_add_check_test(test_golden_dilated test_golden.c test_util.c)
target_include_directories(test_golden_dilated PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(test_golden_dilated PRIVATE LH_GOLDEN_SET_DILATED
                           LH_GOLDEN_DILATED_DIR="${LH_GOLDEN_DILATED_DIR}")
target_include_directories(test_properties PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# Context parallelism: W virtual ranks on local rings against a direct computation.
lh_add_check_test(test_cp test_cp.c test_cp_direct.c test_util.c)
target_include_directories(test_cp PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# The property test is small enough for valgrind memcheck.
list(APPEND LH_MEMCHECK_TESTS test_properties)
# test_cp shrinks its problems under valgrind (about 5 minutes there).
list(APPEND LH_MEMCHECK_TESTS test_cp)
# A local ring under misuse: timeouts, one plan per rank, plans that differ.
lh_add_check_test(test_ring_safety test_ring_safety.c test_util.c)
target_include_directories(test_ring_safety PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# What a careless or hostile caller must not break: 32-bit limits, the error channel, `saved`.
lh_add_check_test(test_hostile test_hostile.c test_util.c)
target_include_directories(test_hostile PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# Hostile numbers: non-finite input, NaN and infinite scores, large logits.
lh_add_check_test(test_numerics test_numerics.c test_util.c)
target_include_directories(test_numerics PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# The scorers (docs/spec.md section 10): external scores = the norm scorer bit for bit, the dilated
# scorer's layouts, the errors of bad scorer parameters and calls.
lh_add_check_test(test_scorers test_scorers.c test_util.c)
target_include_directories(test_scorers PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
list(APPEND LH_MEMCHECK_TESTS test_scorers)
