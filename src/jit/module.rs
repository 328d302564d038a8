//! The Cranelift side of the backend: the JIT module and its ISA, the helper symbols native
//! code calls, lowering a kernel to Cranelift IR, compiling every kernel (in parallel) and
//! making the code executable.
//!
//! It knows kernels and functions, nothing of schedules or buffers: `compile.rs` asks it for
//! a function per kernel and gets back addresses to put in its steps.

use super::codegen::{kernel_signature, Gen, Helpers};
use super::{runtime, vmath, CompileTimes};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::types::{F32, F64, I32, I64};
use cranelift_codegen::ir::{AbiParam, Function, UserFuncName};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module, ModuleReloc};

/// A kernel's native entry point: `(buffers, scratch, status, lo, hi)` (`codegen.rs`).
pub(super) type KernelFn = unsafe extern "C" fn(*const *mut u8, *mut u8, *mut i32, i64, i64);

/// A new JIT module for this machine (optimizing for speed), with the runtime helpers
/// registered as symbols and declared for kernels to call.
pub(super) fn new_module(tile_math: bool) -> Result<(JITModule, Helpers)> {
    let mut flag_builder = settings::builder();
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v)
            .map_err(|e| Error::invalid(format!("jit: setting {k}: {e}")))
    };
    set(&mut flag_builder, "opt_level", "speed")?;
    set(&mut flag_builder, "use_colocated_libcalls", "false")?;
    set(&mut flag_builder, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| Error::invalid(format!("jit: this machine is not supported: {e}")))?
        .finish(settings::Flags::new(flag_builder))
        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    jb.symbol("kiln_pow_f32", runtime::kiln_pow_f32 as *const u8);
    jb.symbol("kiln_pow_f64", runtime::kiln_pow_f64 as *const u8);
    jb.symbol("kiln_pow_i32", runtime::kiln_pow_i32 as *const u8);
    jb.symbol("kiln_rem_f32", runtime::kiln_rem_f32 as *const u8);
    jb.symbol("kiln_rem_f64", runtime::kiln_rem_f64 as *const u8);
    jb.symbol("kiln_unary_f64", runtime::kiln_unary_f64 as *const u8);
    use super::codegen::convert as cv;
    jb.symbol("kiln_f16_to_f32", cv::kiln_f16_to_f32 as *const u8);
    jb.symbol("kiln_f32_to_f16", cv::kiln_f32_to_f16 as *const u8);
    jb.symbol("kiln_bf16_to_f32", cv::kiln_bf16_to_f32 as *const u8);
    jb.symbol("kiln_f32_to_bf16", cv::kiln_f32_to_bf16 as *const u8);
    for (name, f) in vmath::ENTRIES {
        jb.symbol(name, f as *const u8);
    }
    let mut module = JITModule::new(jb);
    let helpers = declare_helpers(&mut module, tile_math)?;
    Ok((module, helpers))
}

/// Tile math is on unless `KILN_TILE_MATH=0` (for comparing the two code paths).
pub(super) fn tile_math_default() -> bool {
    std::env::var("KILN_TILE_MATH").map_or(true, |v| v != "0")
}

fn declare_helpers(module: &mut JITModule, tile_math: bool) -> Result<Helpers> {
    let cc = module.target_config().default_call_conv;
    let mut declare = |name: &str,
                       params: &[cranelift_codegen::ir::Type],
                       ret: Option<cranelift_codegen::ir::Type>| {
        let mut s = cranelift_codegen::ir::Signature::new(cc);
        for &p in params {
            s.params.push(AbiParam::new(p));
        }
        if let Some(r) = ret {
            s.returns.push(AbiParam::new(r));
        }
        module
            .declare_function(name, Linkage::Import, &s)
            .map_err(|e| Error::invalid(format!("jit: {e}")))
    };
    let tile_fns = if tile_math {
        let names = vmath::ENTRIES.map(|(name, _)| name);
        let fns: Result<Vec<FuncId>> = names
            .iter()
            .map(|name| declare(name, &[I64; 3], None))
            .collect();
        Some(fns?)
    } else {
        None
    };
    Ok(Helpers {
        tile_fns,
        pow_f32: declare("kiln_pow_f32", &[F32, F32], Some(F32))?,
        pow_f64: declare("kiln_pow_f64", &[F64, F64], Some(F64))?,
        pow_i32: declare("kiln_pow_i32", &[I32, I32], Some(I32))?,
        rem_f32: declare("kiln_rem_f32", &[F32, F32], Some(F32))?,
        rem_f64: declare("kiln_rem_f64", &[F64, F64], Some(F64))?,
        unary_f64: declare("kiln_unary_f64", &[I32, F64], Some(F64))?,
        f16_to_f32: declare("kiln_f16_to_f32", &[I32], Some(F32))?,
        f32_to_f16: declare("kiln_f32_to_f16", &[F32], Some(I32))?,
        bf16_to_f32: declare("kiln_bf16_to_f32", &[I32], Some(F32))?,
        f32_to_bf16: declare("kiln_f32_to_bf16", &[F32], Some(I32))?,
    })
}

/// Declares kernel `index` and builds its Cranelift IR, appending it to `lowered` for
/// [`define_all`]; returns its function id.
#[allow(clippy::too_many_arguments)]
pub(super) fn lower_kernel(
    module: &mut JITModule,
    fctx: &mut FunctionBuilderContext,
    helpers: &Helpers,
    k: &Kernel,
    index: usize,
    times: &mut CompileTimes,
    lowered: &mut Vec<(FuncId, Function)>,
) -> Result<FuncId> {
    let t0 = std::time::Instant::now();
    let sig = kernel_signature(module.target_config().default_call_conv);
    let name = format!("kernel_{index}");
    let fid = module
        .declare_function(&name, Linkage::Local, &sig)
        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, fid.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut func, fctx);
        let mut g = Gen::new(&mut b, module, helpers, k.params.len());
        g.kernel(k);
        times.tiled += usize::from(g.tiled);
        g.finish();
        b.finalize(module.target_config());
    }
    lowered.push((fid, func));
    times.lowering += t0.elapsed();
    Ok(fid)
}

/// One kernel's machine code, ready to be placed in the module.
struct Compiled {
    bytes: Vec<u8>,
    align: u64,
    relocs: Vec<ModuleReloc>,
    asm: Option<String>,
}

/// Compiles one lowered kernel to machine code. Pure: it reads only the ISA and the
/// function, so kernels compile in parallel.
fn compile_one(
    isa: &dyn TargetIsa,
    (index, (fid, func)): (usize, (FuncId, Function)),
    asm: bool,
) -> Result<Compiled> {
    let mut ctx = cranelift_codegen::Context::for_function(func);
    ctx.set_disasm(asm);
    let align = ctx
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| Error::invalid(format!("jit: compiling kernel {index}: {:?}", e.inner)))?
        .buffer
        .alignment as u64;
    let code = ctx.compiled_code().expect("just compiled");
    let relocs = code
        .buffer
        .relocs()
        .iter()
        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, fid))
        .collect();
    Ok(Compiled {
        bytes: code.code_buffer().to_vec(),
        align,
        relocs,
        asm: if asm { code.vcode.clone() } else { None },
    })
}

/// Compiles every lowered kernel, on the thread pool when there is more than one thread
/// (Cranelift is most of a cold compile, and kernels are independent), then defines them in
/// the module in order. The code does not depend on the thread count.
pub(super) fn define_all(
    module: &mut JITModule,
    lowered: Vec<(FuncId, Function)>,
    times: &mut CompileTimes,
) -> Result<()> {
    use rayon::prelude::*;
    let t0 = std::time::Instant::now();
    // KILN_DUMP_ASM=1 prints each kernel's machine code (for performance work).
    let asm = std::env::var("KILN_DUMP_ASM").is_ok_and(|v| v == "1");
    let isa = module.isa();
    let threads = crate::threads::threads();
    let pool = if threads > 1 && lowered.len() > 1 {
        crate::threads::pool(threads)
    } else {
        None
    };
    let compile = |(index, (fid, f))| (fid, compile_one(isa, (index, (fid, f)), asm));
    // Both keep kernel order (rayon's indexed collect does), so `index` is the kernel's.
    let compiled: Vec<(FuncId, Result<Compiled>)> = match pool {
        Some(p) => p.install(|| lowered.into_par_iter().enumerate().map(compile).collect()),
        None => lowered.into_iter().enumerate().map(compile).collect(),
    };
    for (index, (fid, c)) in compiled.into_iter().enumerate() {
        let c = c?;
        if let Some(code) = &c.asm {
            eprintln!("kernel_{index}:\n{code}");
        }
        module
            .define_function_bytes(fid, c.align, &c.bytes, &c.relocs)
            .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    }
    times.cranelift += t0.elapsed();
    Ok(())
}

/// Makes every defined kernel executable; returns each pending step's function pointer.
pub(super) fn finalize(
    module: &mut JITModule,
    pending: Vec<(usize, FuncId)>,
) -> Result<Vec<(usize, KernelFn)>> {
    module
        .finalize_definitions()
        .map_err(|e| Error::invalid(format!("jit: {e}")))?;
    Ok(pending
        .into_iter()
        .map(|(si, fid)| {
            let ptr = module.get_finalized_function(fid);
            // SAFETY: the function was defined with `kernel_signature`, which is this
            // type's C ABI: five pointer-sized arguments, no result.
            (si, unsafe {
                std::mem::transmute::<*const u8, KernelFn>(ptr)
            })
        })
        .collect())
}

// Placeholder until the real pointer is known after finalization.
pub(super) unsafe extern "C" fn noop_kernel(
    _: *const *mut u8,
    _: *mut u8,
    _: *mut i32,
    _: i64,
    _: i64,
) {
}

/// The JIT module, freed when the executable is dropped.
pub(super) struct Code(pub(super) Option<JITModule>);

// SAFETY: after `finalize_definitions` the module is only read (function addresses were
// taken at compile time) and is touched again only by `Drop`, which has `&mut self`.
unsafe impl Send for Code {}
// SAFETY: as above; no method takes `&self`.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the executable owning this code is being dropped, so no function
            // pointer into it can be called again (steps are dropped with it).
            unsafe { m.free_memory() };
        }
    }
}
