/* lowprec: the integer codes that name rounding modes, scale ops and MX scale rules across the C/CUDA
 * interface. Every C and CUDA source takes its codes from here; lowprec/codes.py mirrors them for Python
 * (tests/test_codes.py parses this file and checks both ways). Enumerator names are LP_ + the Python name
 * in capitals (LP_MX_ for the MX rules); the values are fixed by this file alone. */
#ifndef LOWPREC_CODES_H
#define LOWPREC_CODES_H

/* element rounding (lowprec.rounding.ROUNDINGS, deterministic modes), accumulator alignment (rtz, rdown,
 * rne) and accumulator rounding (rtz, rne) */
typedef enum { LP_RNE = 0, LP_RNA = 1, LP_RTZ = 2, LP_RUP = 3, LP_RDOWN = 4, LP_RTO = 5 } lp_rounding_code;

/* how a scaled value is formed (lowprec.scaling.SCALE_OPS) */
typedef enum { LP_MUL_INV = 0, LP_MUL_RATIO = 1, LP_MUL_RCP_RATIO = 2, LP_DIV = 3 } lp_scale_op_code;

/* the shared exponent of an MX block (lowprec.scaling.MX_RULES) */
typedef enum { LP_MX_FLOOR = 0, LP_MX_CEIL = 1, LP_MX_EVEN = 2, LP_MX_RCEIL = 3 } lp_mx_rule_code;

#endif
