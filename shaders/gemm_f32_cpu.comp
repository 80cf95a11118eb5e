// gemm_f32_cpu.comp — GEMM for CPU Vulkan implementations, fp32 (see gemm_direct.glsl).
#version 450
#define A_F16 0
#define C_F16 0
#include "gemm_direct.glsl"
