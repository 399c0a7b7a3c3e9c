// One precision's kernels under the emulator, with a launch entry point in the shape of cuLaunchKernel.
// Built twice by build.rs: with RMT_F32 (entry emu_launch_f32) and without (entry emu_launch_bf16).
#include "emu.h"

namespace kernels {
#include "kernels.inc"  // every cuda/*.cu, listed by build.rs
}

static const std::vector<emu::Kernel>& registry() {
    static const std::vector<emu::Kernel> table = {
#include "registry.inc"  // {"name", signature, thunk} of every KERNEL found by build.rs
    };
    return table;
}

// Runs kernel `name` over grid × block with cuLaunchKernel-style `params`; `signature` is what the caller passes
// ('p', 'i', 'f' per argument) and must match the kernel's. Returns 0, or 1 with the reason in `err`.
extern "C" int EMU_ENTRY(const char* name, const char* signature, const unsigned* grid, const unsigned* block,
                         void** params, char* err, size_t err_len) {
    std::string error = std::string("no kernel named ") + name;
    for (const auto& k : registry()) {
        if (strcmp(k.name, name) != 0) continue;
        if (k.signature != signature)
            error = std::string(name) + ": arguments '" + signature + "' do not match the kernel's '" + k.signature + "'";
        else
            error = emu::launch(dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]),
                                [&] { k.run(params); });
        break;
    }
    if (error.empty()) return 0;
    snprintf(err, err_len, "%s: %s", name, error.c_str());
    return 1;
}
