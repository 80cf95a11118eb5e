// gemm_h_cpu.comp — GEMM for CPU Vulkan implementations, f16 in, fp32 out (see gemm_direct.glsl).
#version 450
#define A_F16 1
#define C_F16 0
#include "gemm_direct.glsl"
