// pool_h.comp — pool_normalize reading the f16 residual stream (see pool.glsl).
#version 450
#define X_F16 1
#include "pool.glsl"
