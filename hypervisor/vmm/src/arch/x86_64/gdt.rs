//! Segment descriptors for the boot GDT, and their `kvm_segment` form for `KVM_SET_SREGS`.

use kvm_bindings::kvm_segment;

/// Access byte: present, code/data, executable, readable, accessed.
const ACCESS_CODE: u8 = 0x9b;
/// Access byte: present, code/data, writable, accessed.
const ACCESS_DATA: u8 = 0x93;
/// Access byte: present, system, busy 32/64-bit TSS.
const ACCESS_TSS: u8 = 0x8b;
/// Flag nibble bits.
const FLAG_GRANULARITY_4K: u8 = 0x8;
const FLAG_DEFAULT_32: u8 = 0x4;
const FLAG_LONG: u8 = 0x2;

/// One segment descriptor, flat unless stated otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub base: u32,
    /// 20-bit limit, in 4 KiB units when the granularity flag is set.
    pub limit: u32,
    pub access: u8,
    /// The G, D/B, L, AVL nibble.
    pub flags: u8,
}

impl Descriptor {
    pub const NULL: Descriptor = Descriptor {
        base: 0,
        limit: 0,
        access: 0,
        flags: 0,
    };
    /// Flat 64-bit code.
    pub const CODE64: Descriptor = Descriptor::flat(ACCESS_CODE, FLAG_GRANULARITY_4K | FLAG_LONG);
    /// Flat 32-bit code (PVH entry).
    pub const CODE32: Descriptor =
        Descriptor::flat(ACCESS_CODE, FLAG_GRANULARITY_4K | FLAG_DEFAULT_32);
    /// Flat data, for both modes.
    pub const DATA: Descriptor =
        Descriptor::flat(ACCESS_DATA, FLAG_GRANULARITY_4K | FLAG_DEFAULT_32);
    /// A placeholder TSS: KVM wants a usable task register, the guest replaces it.
    pub const TSS: Descriptor = Descriptor {
        base: 0,
        limit: 0x67,
        access: ACCESS_TSS,
        flags: 0,
    };

    const fn flat(access: u8, flags: u8) -> Descriptor {
        Descriptor {
            base: 0,
            limit: 0xfffff,
            access,
            flags,
        }
    }

    /// The 8-byte descriptor as it sits in the GDT.
    pub fn encode(&self) -> u64 {
        let base = u64::from(self.base);
        let limit = u64::from(self.limit & 0xfffff);
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (u64::from(self.access) << 40)
            | ((limit >> 16) << 48)
            | (u64::from(self.flags & 0xf) << 52)
            | ((base >> 24) << 56)
    }

    /// The segment register state for this descriptor at GDT slot `index`.
    pub fn segment(&self, index: u16) -> kvm_segment {
        let granular = self.flags & FLAG_GRANULARITY_4K != 0;
        let limit = if granular {
            (self.limit << 12) | 0xfff
        } else {
            self.limit
        };
        kvm_segment {
            base: u64::from(self.base),
            limit,
            selector: index * 8,
            type_: self.access & 0xf,
            present: (self.access >> 7) & 1,
            dpl: (self.access >> 5) & 3,
            db: u8::from(self.flags & FLAG_DEFAULT_32 != 0),
            s: (self.access >> 4) & 1,
            l: u8::from(self.flags & FLAG_LONG != 0),
            g: u8::from(granular),
            avl: self.flags & 1,
            unusable: u8::from(self.access & 0x80 == 0),
            padding: 0,
        }
    }
}

/// The boot GDT for a mode: null, code, data, TSS. Selectors are 0x08, 0x10, 0x18.
pub fn boot_gdt(long_mode: bool) -> [Descriptor; 4] {
    let code = if long_mode {
        Descriptor::CODE64
    } else {
        Descriptor::CODE32
    };
    [Descriptor::NULL, code, Descriptor::DATA, Descriptor::TSS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_well_known_flat_descriptors() {
        assert_eq!(Descriptor::CODE64.encode(), 0x00af_9b00_0000_ffff);
        assert_eq!(Descriptor::CODE32.encode(), 0x00cf_9b00_0000_ffff);
        assert_eq!(Descriptor::DATA.encode(), 0x00cf_9300_0000_ffff);
        assert_eq!(Descriptor::NULL.encode(), 0);
    }

    #[test]
    fn segment_matches_descriptor() {
        let cs = Descriptor::CODE64.segment(1);
        assert_eq!(cs.selector, 8);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.present, cs.s, cs.type_),
            (1, 0, 1, 1, 1, 0xb)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let tss = Descriptor::TSS.segment(3);
        assert_eq!(
            (tss.selector, tss.s, tss.limit, tss.unusable),
            (0x18, 0, 0x67, 0)
        );
        assert_eq!(Descriptor::NULL.segment(0).unusable, 1);
    }
}
