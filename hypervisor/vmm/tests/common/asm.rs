//! A tiny x86-64 assembler for test guests: the handful of instructions they use,
//! each documented with its assembly, and rel32 jumps to named labels.

use std::collections::HashMap;

use cocoon_vmm::devices::legacy::debug_exit::DEBUG_EXIT_PORT;

#[derive(Default)]
pub struct Asm {
    code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn emit(&mut self, bytes: &[u8]) -> &mut Asm {
        self.code.extend_from_slice(bytes);
        self
    }

    fn imm32(&mut self, v: u32) -> &mut Asm {
        self.emit(&v.to_le_bytes())
    }

    /// Absolute addressing `[disp32]` (SIB, no base, no index): addresses below 2 GiB.
    fn abs(&mut self, addr: u32) -> &mut Asm {
        assert!(addr < 0x8000_0000, "disp32 is sign-extended");
        self.emit(&[0x04, 0x25]).imm32(addr)
    }

    fn rel32(&mut self, opcode: &[u8], label: &'static str) -> &mut Asm {
        self.emit(opcode);
        self.fixups.push((self.code.len(), label));
        self.imm32(0)
    }

    pub fn label(&mut self, name: &'static str) -> &mut Asm {
        assert!(
            self.labels.insert(name, self.code.len()).is_none(),
            "duplicate label {name}"
        );
        self
    }

    /// `mov dx, imm16`
    pub fn mov_dx(&mut self, v: u16) -> &mut Asm {
        self.emit(&[0x66, 0xba]).emit(&v.to_le_bytes())
    }

    /// `mov al, imm8`
    pub fn mov_al(&mut self, v: u8) -> &mut Asm {
        self.emit(&[0xb0, v])
    }

    /// `out dx, al`
    pub fn out_dx_al(&mut self) -> &mut Asm {
        self.emit(&[0xee])
    }

    /// `mov edi, imm32` (zero-extended into rdi)
    pub fn mov_edi(&mut self, v: u32) -> &mut Asm {
        self.emit(&[0xbf]).imm32(v)
    }

    /// `mov eax, [rdi + disp32]`
    pub fn load32_rdi(&mut self, disp: u32) -> &mut Asm {
        self.emit(&[0x8b, 0x87]).imm32(disp)
    }

    /// `mov dword [rdi + disp32], imm32`
    pub fn store32_rdi(&mut self, disp: u32, v: u32) -> &mut Asm {
        self.emit(&[0xc7, 0x87]).imm32(disp).imm32(v)
    }

    /// `mov dword [addr], imm32`
    pub fn store32(&mut self, addr: u32, v: u32) -> &mut Asm {
        self.emit(&[0xc7]).abs(addr).imm32(v)
    }

    /// `mov word [addr], imm16`
    pub fn store16(&mut self, addr: u32, v: u16) -> &mut Asm {
        self.emit(&[0x66, 0xc7]).abs(addr).emit(&v.to_le_bytes())
    }

    /// `mov qword [addr], imm32` (sign-extended)
    pub fn store64(&mut self, addr: u32, v: u32) -> &mut Asm {
        assert!(v < 0x8000_0000);
        self.emit(&[0x48, 0xc7]).abs(addr).imm32(v)
    }

    /// `mov dword [addr], eax`
    pub fn store32_eax(&mut self, addr: u32) -> &mut Asm {
        self.emit(&[0x89]).abs(addr)
    }

    /// `mov eax, [addr]`
    pub fn load32(&mut self, addr: u32) -> &mut Asm {
        self.emit(&[0x8b]).abs(addr)
    }

    /// `movzx eax, word [addr]`
    pub fn load16(&mut self, addr: u32) -> &mut Asm {
        self.emit(&[0x0f, 0xb7]).abs(addr)
    }

    /// `mov rax, [addr]`
    pub fn load64(&mut self, addr: u32) -> &mut Asm {
        self.emit(&[0x48, 0x8b]).abs(addr)
    }

    /// `or rax, [addr]`
    pub fn or64(&mut self, addr: u32) -> &mut Asm {
        self.emit(&[0x48, 0x0b]).abs(addr)
    }

    /// `cmp rax, [addr]`
    pub fn cmp64(&mut self, addr: u32) -> &mut Asm {
        self.emit(&[0x48, 0x3b]).abs(addr)
    }

    /// `cmp eax, imm32`
    pub fn cmp_eax(&mut self, v: u32) -> &mut Asm {
        self.emit(&[0x3d]).imm32(v)
    }

    /// `test eax, imm32`
    pub fn test_eax(&mut self, v: u32) -> &mut Asm {
        self.emit(&[0xa9]).imm32(v)
    }

    /// `test rax, rax`
    pub fn test_rax_rax(&mut self) -> &mut Asm {
        self.emit(&[0x48, 0x85, 0xc0])
    }

    /// `jne label` (rel32)
    pub fn jne(&mut self, label: &'static str) -> &mut Asm {
        self.rel32(&[0x0f, 0x85], label)
    }

    /// `je label` (rel32)
    pub fn je(&mut self, label: &'static str) -> &mut Asm {
        self.rel32(&[0x0f, 0x84], label)
    }

    /// `jb label` (rel32; unsigned below)
    pub fn jb(&mut self, label: &'static str) -> &mut Asm {
        self.rel32(&[0x0f, 0x82], label)
    }

    /// `jmp label` (rel32)
    pub fn jmp(&mut self, label: &'static str) -> &mut Asm {
        self.rel32(&[0xe9], label)
    }

    /// `jmp $`: spin forever.
    pub fn spin(&mut self) -> &mut Asm {
        self.emit(&[0xeb, 0xfe])
    }

    /// `pause`
    pub fn pause(&mut self) -> &mut Asm {
        self.emit(&[0xf3, 0x90])
    }

    /// `hlt`
    pub fn hlt(&mut self) -> &mut Asm {
        self.emit(&[0xf4])
    }

    /// `ud2`
    pub fn ud2(&mut self) -> &mut Asm {
        self.emit(&[0x0f, 0x0b])
    }

    /// `mov dx, port; mov al, byte; out dx, al` for each byte.
    pub fn outb_str(&mut self, port: u16, bytes: &[u8]) -> &mut Asm {
        self.mov_dx(port);
        for &b in bytes {
            self.mov_al(b).out_dx_al();
        }
        self
    }

    /// `mov dx, DEBUG_EXIT_PORT; mov al, code; out dx, al; jmp $`
    pub fn exit(&mut self, code: u8) -> &mut Asm {
        self.outb_str(DEBUG_EXIT_PORT, &[code]).spin()
    }

    /// The machine code, jumps resolved.
    pub fn finish(&self) -> Vec<u8> {
        let mut code = self.code.clone();
        for &(at, label) in &self.fixups {
            let target = *self
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("no label {label}"));
            let rel = target as i64 - (at as i64 + 4);
            code[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        code
    }
}

#[test]
fn encodes_jumps_relative_to_the_next_instruction() {
    let mut a = Asm::new();
    a.label("top").pause().jmp("top");
    assert_eq!(a.finish(), vec![0xf3, 0x90, 0xe9, 0xf9, 0xff, 0xff, 0xff]);
}
