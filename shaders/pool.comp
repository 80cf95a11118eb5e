// pool.comp — pool_normalize on the f32 residual stream (see pool.glsl).
#version 450
#include "pool.glsl"
