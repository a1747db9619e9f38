; Ephemera test guest: a one-sector BIOS boot program (nasm -f bin).
;
; Disk layout (512-byte sectors, LBA):
;   0  this boot code (boot signature 0x55AA at offset 510)
;   1  marker text, printable ASCII, NUL-terminated (written at build time; tests may overwrite it)
;   2  boot counter: little-endian uint16 at offset 0, incremented and written back on every boot
;   3+ padding (zeros or pseudo-random data), never read
;
; Serial console (COM1, 0x3F8, 115200 8N1) output, one line each, CRLF-terminated:
;   EPHEMERA-BOOT
;   EPHEMERA-MARKER <marker text>
;   EPHEMERA-BOOTS <n>           (n = boot count after this boot, decimal)
;   EPHEMERA-POWEROFF
; then the guest powers off through the BIOS APM interface (int 15h AX=5307h, all devices off);
; SeaBIOS implements that by writing SLP_EN|SLP_TYP=0 (S5) to the ACPI PM1a control register.
; If a disk access fails, ACPI is missing (no RSDP: libvirt needs <features><acpi/>) or the
; power-off returns, it prints `EPHEMERA-ERROR read|write|no-acpi|poweroff` and halts.
;
; Assembled with -DCOUNT (tools/guest-image --mode count), it does not power off: after the
; EPHEMERA-BOOTS line it prints `EPHEMERA-COUNT <n>` (n = 0, 1, 2, ... decimal, uint32) every
; 100 ms for as long as it runs. The clock is the PIT (channel 0 reprogrammed to 100 Hz, ten of
; its interrupts per line, hlt in between): the PIT runs in virtual time under TCG and KVM alike
; and migrates with the guest, where a calibrated loop would depend on the vCPU's speed (TCG is
; ~50x slower, and load varies) and keep a host CPU busy.

bits 16
org 0x7c00

COM1    equ 0x3f8
BUF     equ 0x7e00              ; sector 1 at BUF, sector 2 at BUF+512

start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    cld
    jmp 0:main                  ; normalise CS:IP to 0000:7Cxx

main:
    mov [drive], dl             ; BIOS boot drive

    ; COM1: 115200 baud, 8N1, FIFO on
    mov dx, COM1+1
    xor al, al
    out dx, al                  ; IER = 0
    mov dx, COM1+3
    mov al, 0x80
    out dx, al                  ; DLAB = 1
    mov dx, COM1
    mov al, 1
    out dx, al                  ; divisor low = 1
    inc dx
    xor al, al
    out dx, al                  ; divisor high = 0
    mov dx, COM1+3
    mov al, 3
    out dx, al                  ; 8N1, DLAB = 0
    dec dx
    mov al, 0xc7
    out dx, al                  ; FCR: enable + clear FIFOs
    mov dx, COM1+4
    mov al, 3
    out dx, al                  ; MCR: DTR | RTS

    mov si, msg_boot
    call puts

    ; read sectors 1..2 into BUF (int 13h extended read)
    mov si, dap
    mov ah, 0x42
    mov dl, [drive]
    int 0x13
    jc err_read

    ; EPHEMERA-MARKER <text>: printable ASCII up to NUL, at most 255 chars
    mov si, msg_marker
    call puts
    mov si, BUF
    mov cx, 255
.mk:
    lodsb
    cmp al, 0x20
    jb .mkdone
    cmp al, 0x7e
    ja .mkdone
    call putc
    loop .mk
.mkdone:
    mov si, crlf
    call puts

    ; boot counter in sector 2
    inc word [BUF+512]
    mov word [dap_count], 1
    mov word [dap_buf], BUF+512
    mov word [dap_lba], 2
    mov si, dap
    mov ax, 0x4300              ; extended write, no verify
    mov dl, [drive]
    int 0x13
    jc err_write

    mov si, msg_boots
    call puts
    mov ax, [BUF+512]
    call putdec
    mov si, crlf
    call puts

%ifdef COUNT
    ; Own IRQ0 handler (IVT entry 8: the PIC's base vector is 8 after SeaBIOS), PIT channel 0 in
    ; mode 2 at 1193182 / 11932 = 100.0 Hz, IRQ0 unmasked.
    cli
    mov word [8*4], irq0
    mov word [8*4+2], 0
    mov al, 0x34                ; channel 0, lobyte/hibyte, mode 2 (rate generator), binary
    out 0x43, al
    mov ax, 11932
    out 0x40, al
    mov al, ah
    out 0x40, al
    in al, 0x21
    and al, 0xfe
    out 0x21, al
    sti
    xor esi, esi                ; the counter printed next
    xor edi, edi                ; tick at which it is due (absolute: a late line never shifts the next)
.count:
    push si
    mov si, msg_count
    call puts
    pop si
    mov eax, esi
    call putdec32
    push si
    mov si, crlf
    call puts
    pop si
    inc esi
    add edi, 10
.wait:
    hlt                         ; until the next interrupt (IF=1): the vCPU idles between ticks
    mov eax, [ticks]
    sub eax, edi
    js .wait
    jmp .count

irq0:
    inc dword [cs:ticks]
    push ax
    mov al, 0x20
    out 0x20, al                ; EOI to the master PIC
    pop ax
    iret

; putdec32: EAX as unsigned decimal
putdec32:
    mov ebx, 10
    xor cx, cx
.div:
    xor edx, edx
    div ebx
    push dx
    inc cx
    test eax, eax
    jnz .div
.out:
    pop ax
    add al, '0'
    call putc
    loop .out
    ret
%else
    ; Power-off needs ACPI (SeaBIOS's APM power-off writes the PM1a control register it found in
    ; the FADT; without ACPI, e.g. libvirt without <features><acpi/>, it would halt forever):
    ; look for the RSDP signature "RSD PTR " on a 16-byte boundary in E000:0000..F000:FFFF.
    mov ax, 0xe000
.seg:
    mov es, ax
    xor di, di
.scan:
    cmp dword [es:di], 'RSD '
    jne .next
    cmp dword [es:di+4], 'PTR '
    je .acpi
.next:
    add di, 16
    jnz .scan
    add ah, 0x10
    jnc .seg                    ; E000 -> F000 -> (carry) done
    mov si, msg_eacpi
    jmp fail
.acpi:
    mov si, msg_off
    call puts

    ; APM: installation check, connect real-mode interface, driver version 1.2, power off all
    mov ax, 0x5300
    xor bx, bx
    int 0x15
    jc err_apm
    mov ax, 0x5301
    xor bx, bx
    int 0x15                    ; error 02h (already connected) is fine
    mov ax, 0x530e
    xor bx, bx
    mov cx, 0x0102
    int 0x15
    mov ax, 0x5307
    mov bx, 1
    mov cx, 3
    int 0x15
err_apm:
    mov si, msg_eapm
    jmp fail
%endif
err_read:
    mov si, msg_eread
    jmp fail
err_write:
    mov si, msg_ewrite
fail:
    push si
    mov si, msg_err
    call puts
    pop si
    call puts
halt:
    cli
    hlt
    jmp halt

; putc: AL -> COM1 (waits for THR empty)
putc:
    push dx
    push ax
    mov dx, COM1+5
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    pop ax
    mov dx, COM1
    out dx, al
    pop dx
    ret

; puts: NUL-terminated string at DS:SI
puts:
    lodsb
    test al, al
    jz .done
    call putc
    jmp puts
.done:
    ret

; putdec: AX as unsigned decimal
putdec:
    mov bx, 10
    xor cx, cx
.div:
    xor dx, dx
    div bx
    push dx
    inc cx
    test ax, ax
    jnz .div
.out:
    pop ax
    add al, '0'
    call putc
    loop .out
    ret

msg_boot    db 13, 10, 'EPHEMERA-BOOT', 13, 10, 0
msg_marker  db 'EPHEMERA-MARKER ', 0
msg_boots   db 'EPHEMERA-BOOTS ', 0
%ifdef COUNT
msg_count   db 'EPHEMERA-COUNT ', 0
ticks       dd 0
%else
msg_off     db 'EPHEMERA-POWEROFF', 13, 10, 0
%endif
msg_err     db 'EPHEMERA-ERROR ', 0
msg_eread   db 'read', 13, 10, 0
msg_ewrite  db 'write', 13, 10, 0
%ifndef COUNT
msg_eapm    db 'poweroff', 13, 10, 0
msg_eacpi   db 'no-acpi', 13, 10, 0
%endif
crlf        db 13, 10, 0
drive       db 0x80

; int 13h extensions disk address packet
dap:
            db 0x10, 0
dap_count   dw 2
dap_buf     dw BUF, 0
dap_lba     dd 1, 0

    times 510 - ($ - $$) db 0   ; no partition table: the disk is the program
    dw 0xaa55
