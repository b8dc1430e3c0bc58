/// Every freed heap block is zeroed first: no request, response or key bytes outlive
/// their buffers (`kes::sys::wipe`).
#[global_allocator]
static ALLOCATOR: kes::sys::wipe::WipingAllocator = kes::sys::wipe::WipingAllocator;

fn main() -> std::process::ExitCode {
    kes::cli::main()
}
