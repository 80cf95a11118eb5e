/* vk_ctx.h — the Vulkan plumbing under the GPU backend: loader, instance, device choice,
 * buffers, embedded-SPIR-V pipelines and one-shot command submission.
 *
 * The loader is opened with dlopen rather than linked, so that a machine without
 * libvulkan.so.1 still runs every binary (the CPU path) and a GPU request fails with a clear
 * EMB_EDEVICE message instead of the dynamic linker refusing to start the program. All
 * entry points live in a vk_ctx (no globals), so several contexts can coexist.
 *
 * forward_vk.c builds the BERT forward pass on top of this; tests/test_vk_forward.c and dev/gemm/tool_vk_gemm.c use it
 * directly to check single kernels against plain C loops.
 */
#ifndef EMB_VK_CTX_H
#define EMB_VK_CTX_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "err.h"
#include "vk_settings.h"

/* Entry points, by the level at which they are looked up. */
#define VK_GLOBAL_FUNCS(X) \
	X(vkCreateInstance) X(vkEnumerateInstanceVersion)
#define VK_INSTANCE_FUNCS(X) \
	X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties) \
	X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2) \
	X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkGetPhysicalDeviceMemoryProperties) \
	X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice) X(vkGetDeviceProcAddr)
#define VK_DEVICE_FUNCS(X) \
	X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer) X(vkDestroyBuffer) \
	X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory) \
	X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory) X(vkCreateShaderModule) \
	X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) \
	X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) \
	X(vkDestroyPipeline) X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) \
	X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets) X(vkCreateCommandPool) \
	X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) X(vkFreeCommandBuffers) \
	X(vkResetCommandBuffer) X(vkBeginCommandBuffer) X(vkEndCommandBuffer) \
	X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) \
	X(vkCmdDispatch) X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdFillBuffer) \
	X(vkCmdWriteTimestamp) X(vkCreateQueryPool) X(vkDestroyQueryPool) \
	X(vkCmdResetQueryPool) X(vkGetQueryPoolResults) X(vkCreateFence) X(vkDestroyFence) \
	X(vkResetFences) X(vkWaitForFences) X(vkQueueSubmit) X(vkDeviceWaitIdle) \
	X(vkCreatePipelineCache) X(vkDestroyPipelineCache) X(vkGetPipelineCacheData)

/* The one descriptor-set layout every kernel uses: this many storage buffers, bindings
 * 0..VK_BINDINGS-1, plus VK_PUSH_BYTES of push constants. One layout means one pipeline
 * layout and interchangeable descriptor sets. */
#define VK_BINDINGS 6
#define VK_PUSH_BYTES 64


typedef struct vk_ctx {
	void *lib; /* dlopen handle of libvulkan.so.1 */
	PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
#define VK_DECLARE_FN(f) PFN_##f f;
	VK_GLOBAL_FUNCS(VK_DECLARE_FN)
	VK_INSTANCE_FUNCS(VK_DECLARE_FN)
	VK_DEVICE_FUNCS(VK_DECLARE_FN)
#undef VK_DECLARE_FN
	PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV vkGetPhysicalDeviceCooperativeMatrixPropertiesNV;
	PFN_vkGetPipelineExecutablePropertiesKHR vkGetPipelineExecutablePropertiesKHR;
	PFN_vkGetPipelineExecutableStatisticsKHR vkGetPipelineExecutableStatisticsKHR;

	VkInstance instance;
	VkPhysicalDevice phys;
	VkDevice device;
	VkQueue queue;
	VkQueue queue2;     /* a second queue of the family (set.queues = 2, where it has one),
			     * else VK_NULL_HANDLE */
	uint32_t queue_family;
	VkPhysicalDeviceProperties props;
	VkPhysicalDeviceMemoryProperties mem;
	int index;          /* position in vkEnumeratePhysicalDevices order */
	char name[400];     /* e.g. "NVIDIA H200 (Vulkan 1.4, discrete)" */

	/* What the device offers (and what was enabled on it). */
	int has_f16;        /* shaderFloat16 + storageBuffer16BitAccess */
	int has_coopmat;    /* NV cooperative matrix 16x16x16 f16*f16+f32, subgroup size 32 */
	int has_coopmat_i8; /* has_coopmat, shaderInt8 and 16x16x32 s8*s8+s32 matrices (enabled) */
	int has_study;      /* set.study_exts offered by the device and enabled */
	int has_timestamps;
	int capture_stats;  /* set.stats and the driver reports pipeline statistics */
	uint32_t subgroup_size;
	uint32_t min_subgroup_size; /* the smallest a pipeline may get (subgroup size control) */
	int has_shuffle;    /* subgroup shuffles in compute shaders (VK_SUBGROUP_FEATURE_SHUFFLE_BIT) */
	uint32_t sm_count;  /* streaming multiprocessors (VK_NV_shader_sm_builtins), 0 if unknown */
	float timestamp_ns; /* nanoseconds per timestamp tick */
	vk_settings set;    /* as opened with */

	VkDescriptorSetLayout dsl;
	VkPipelineLayout layout;
	VkCommandPool cmd_pool;

	/* Every pipeline is built through one VkPipelineCache (the driver synchronises it, so
	 * threads share it), seeded at open from a file in set.cache_dir named by the device and
	 * driver (vendor, device, driver version, pipelineCacheUUID), so that a second open skips
	 * the shader compiler. A file that is truncated, corrupted (our own XXH3 around the
	 * data) or another device's (the Vulkan header's vendor, device and UUID) is ignored. */
	VkPipelineCache pcache;    /* VK_NULL_HANDLE: set.pipeline_cache is 0 (or the driver
				    * refused one) */
	char pcache_path[640];     /* the file; "" when set.cache_dir is "" or the cache is off */
	size_t pcache_loaded;      /* bytes of pipeline data accepted from the file at open */
	size_t pcache_size;        /* size and XXH3 of the data the file holds as far as this */
	uint64_t pcache_sum;       /* context knows (to write only what changed) */

	/* Where vk_ctx_open's time went, in seconds (start-up is a product target: warm open
	 * under half a second): dlopen of the loader, vkCreateInstance, device choice and
	 * vkCreateDevice, layouts and the pipeline-cache file. */
	double t_loader, t_instance, t_device, t_layouts;
} vk_ctx;

/* Seconds on the monotonic clock (for the start-up accounts). */
double vk_now(void);

/* Opens the Vulkan loader, creates an instance and a logical device with one compute queue
 * (two, queue and queue2, where set->queues is 2 and the family has them).
 * Device choice: gpu_index >= 0 takes that device of the enumeration; otherwise set->gpu if
 * >= 0; otherwise the first discrete GPU, then integrated, then virtual, then (only when
 * allow_cpu is nonzero) a CPU implementation such as lavapipe. A device must offer Vulkan 1.2
 * and a compute queue. set may be NULL (vk_settings_default); a copy is kept in c->set. On
 * failure everything opened is closed again and *c is zeroed. Errors: EMB_EDEVICE ("no Vulkan
 * loader (libvulkan.so.1): ...", "no Vulkan device", "device 3 does not exist (2 devices)",
 * "... does not support Vulkan 1.2"), EMB_EINVAL (set->bad: a malformed variable). */
int vk_ctx_open(vk_ctx *c, int gpu_index, int allow_cpu, const vk_settings *set, emb_err *err);

/* Writes the pipeline cache's data to c->pcache_path when it differs from what the file
 * held at open (or was last written): a temporary file in the same directory (created, with
 * its parent, when missing) renamed over the old one, so a reader sees the old file or the new
 * one. Call after building pipelines, from one thread while none is being built. Returns 1
 * written, 0 nothing to write (cache off, no directory, unchanged), -1 not written (errno
 * set: read-only or full file system, ...); a cache that cannot be saved is no error, so
 * callers go on either way. */
int vk_ctx_save_pipeline_cache(vk_ctx *c);

/* Destroys everything vk_ctx_open created and unloads the loader. Safe on a zeroed ctx. */
void vk_ctx_close(vk_ctx *c);

/* Writes one line per Vulkan device ("0: NVIDIA H200 (discrete, Vulkan 1.4, coopmat)") to
 * buf (at most cap bytes, NUL-terminated). Returns the number of devices, or -1 with *err
 * set when no loader or instance is available. */
int vk_list_devices(char *buf, size_t cap, emb_err *err);

/* A buffer with its own memory. Host buffers are persistently mapped (map != NULL). */
typedef struct vk_buf {
	VkBuffer buf;
	VkDeviceMemory mem;
	VkDeviceSize size;
	void *map;
} vk_buf;

enum { VK_MEM_DEVICE = 0, VK_MEM_HOST = 1 };

/* Creates a storage buffer of size bytes (also a transfer source and destination). kind
 * VK_MEM_DEVICE prefers device-local memory; VK_MEM_HOST needs host-visible coherent memory
 * (cached when the device offers it, since the host reads results back). Errors:
 * EMB_ENOMEM (the message says "out of device memory" and the size), EMB_EDEVICE. */
int vk_buf_create(vk_ctx *c, vk_buf *b, VkDeviceSize size, int kind, emb_err *err);

/* Frees the buffer and zeroes *b. Safe on a zeroed vk_buf. */
void vk_buf_destroy(vk_ctx *c, vk_buf *b);

/* Copies n bytes from src into b at offset off through a temporary host buffer (or
 * directly when b is mapped), waiting for completion. For one-time uploads (weights).
 * Errors: EMB_ENOMEM, EMB_EDEVICE. */
int vk_upload(vk_ctx *c, vk_buf *b, VkDeviceSize off, const void *src, size_t n, emb_err *err);

/* vk_upload through `staging`, a host buffer of the caller's (VK_MEM_HOST, any size: the
 * copy goes in pieces of its size), so that several uploads share one: pinned host memory
 * is slow to allocate. staging NULL is vk_upload. */
int vk_upload_via(vk_ctx *c, vk_buf *b, VkDeviceSize off, const void *src, size_t n,
		  vk_buf *staging, emb_err *err);

/* Fills all of b with zero bytes, waiting for completion. */
int vk_zero(vk_ctx *c, vk_buf *b, emb_err *err);

/* A compute pipeline built from one embedded SPIR-V module (build/shaders_spv.c). */
typedef struct vk_pipe {
	VkPipeline pipe;
	const char *name;
} vk_pipe;

/* Builds the pipeline for the embedded module `name` (e.g. "gemm_f32") with up to 4 uint32
 * specialization constants (ids 0..nspec-1). Errors: EMB_EDEVICE ("shader 'x' is not
 * embedded", "shader 'x' failed to compile on <device>: VK_ERROR_..."). */
int vk_pipe_create(vk_ctx *c, vk_pipe *p, const char *name, const uint32_t *spec, int nspec,
		   emb_err *err);

/* The same from SPIR-V words at hand (size in bytes, read only during the call), for
 * tools that try shader variants. */
int vk_pipe_create_spv(vk_ctx *c, vk_pipe *p, const char *name, const uint32_t *words,
		       size_t size, const uint32_t *spec, int nspec, emb_err *err);

/* Writes the driver's statistics for p (registers, spills, ...) as one line per executable,
 * when the context captures them (EMBED_VK_STATS set at open and the driver offers
 * VK_KHR_pipeline_executable_properties); nothing otherwise. */
void vk_pipe_report(const vk_ctx *c, const vk_pipe *p, FILE *f);

void vk_pipe_destroy(vk_ctx *c, vk_pipe *p);

/* A VkResult as text, e.g. "VK_ERROR_OUT_OF_DEVICE_MEMORY". */
const char *vk_result_name(VkResult r);

/* Allocates one command buffer from the ctx's pool; begin/submit helpers for one-shot work:
 * vk_submit_wait ends cb, submits it, waits up to timeout_ms (or c->timeout_s when that is
 * longer) and frees nothing. Errors: EMB_EDEVICE (including "GPU did not finish within N ms",
 * naming EMBED_GPU_TIMEOUT). */
int vk_cmd_alloc(vk_ctx *c, VkCommandBuffer *cb, emb_err *err);
int vk_cmd_begin(vk_ctx *c, VkCommandBuffer cb, emb_err *err);
int vk_submit_wait(vk_ctx *c, VkCommandBuffer cb, uint64_t timeout_ms, emb_err *err);

/* A compute->compute (+transfer) memory barrier: every earlier shader or copy write is
 * visible to every later shader or copy. */
void vk_cmd_barrier(vk_ctx *c, VkCommandBuffer cb);

#endif
