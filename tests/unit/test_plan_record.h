/* test_plan_record.h - the cases of the cuDNN plan store's records (test_plan_record.c), run by
 * test_plan_cache. */
#ifndef LH_TEST_PLAN_RECORD_H
#define LH_TEST_PLAN_RECORD_H

#include <check.h>

TCase *plan_record_tcase(void);

#endif
