// geglu.comp — GEGLU over f32 activations (see geglu.glsl).
#version 450
#define QKV_F16 0
#include "geglu.glsl"
