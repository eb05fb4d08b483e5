// c-filter: an eventplug plugin in plain C, built with clang for wasm32 with no libc.
//
// It shows that the ABI (docs/abi.md) needs nothing from AssemblyScript:
//   - events whose type is listed in the config's "drop" array are skipped;
//   - a failed user.login raises a WARNING alert that carries the event, and logs a line;
//   - every other event is forwarded with one edit: "processed_by" set to "eventplug-c".
// Config (JSON, optional): {"drop": ["session.data", "print"]}

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("eventplug"), import_name(name)))

IMPORT("log") void host_log(int level, const u8 *ptr, int len);
IMPORT("alert") int host_alert(const u8 *ptr, int len);

// ---- memory: a bump allocator reset by every eventplug_alloc (the ABI allows it: the input region
// and the previous response are dead once the host asks for new memory).
extern u8 __heap_base;
static u32 heap_top;

static void *bump(u32 size) {
    if (heap_top == 0) heap_top = (u32)&__heap_base;
    u32 start = (heap_top + 7u) & ~7u;
    u32 end = start + size;
    u32 have = (u32)__builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        u32 pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) < 0) return 0;
    }
    heap_top = end;
    return (void *)start;
}

void *memcpy(void *dst, const void *src, unsigned long n) {
    u8 *d = dst;
    const u8 *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, unsigned long n) {
    u8 *d = dst;
    while (n--) *d++ = (u8)c;
    return dst;
}

static int bytes_eq(const u8 *a, u32 alen, const char *b) {
    u32 i = 0;
    for (; i < alen; i++) if (b[i] == 0 || a[i] != (u8)b[i]) return 0;
    return b[i] == 0;
}

// ---- protobuf reading
typedef struct { const u8 *p; const u8 *end; } reader;

static int read_varint(reader *r, u64 *out) {
    u64 v = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        u8 b = *r->p++;
        v |= (u64)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *out = v; return 1; }
    }
    return 0;
}

// Reads the next field: its number, wire type, and for length-delimited fields the bytes.
static int next_field(reader *r, u32 *field, u32 *wire, reader *sub) {
    u64 tag, len;
    if (r->p >= r->end || !read_varint(r, &tag)) return 0;
    *field = (u32)(tag >> 3);
    *wire = (u32)(tag & 7);
    switch (*wire) {
    case 0: return read_varint(r, &len);
    case 1: if (r->end - r->p < 8) return 0; r->p += 8; return 1;
    case 5: if (r->end - r->p < 4) return 0; r->p += 4; return 1;
    case 2:
        if (!read_varint(r, &len) || (u64)(r->end - r->p) < len) return 0;
        sub->p = r->p; sub->end = r->p + len; r->p += len; return 1;
    default: return 0;
    }
}

// Finds length-delimited field `want` in a message.
static int find_bytes(reader msg, u32 want, reader *out) {
    u32 field, wire; reader sub;
    while (next_field(&msg, &field, &wire, &sub))
        if (field == want && wire == 2) { *out = sub; return 1; }
    return 0;
}

// Looks up a top-level boolean in the envelope's Struct; returns -1 when absent or not a boolean.
static int struct_bool(reader envelope, const char *key) {
    reader fields, entry, k, value;
    u32 field, wire;
    if (!find_bytes(envelope, 5, &fields)) return -1;
    while (next_field(&fields, &field, &wire, &entry)) {
        if (field != 1 || wire != 2) continue;
        if (!find_bytes(entry, 1, &k) || !bytes_eq(k.p, (u32)(k.end - k.p), key)) continue;
        if (!find_bytes(entry, 2, &value)) return -1;
        u64 v; reader unused;
        while (next_field(&value, &field, &wire, &unused)) {
            // Value.bool_value is field 4, a varint: re-read it.
            if (field == 4 && wire == 0) { value.p--; read_varint(&value, &v); return v != 0; }
        }
        return -1;
    }
    return -1;
}

// ---- protobuf writing
typedef struct { u8 *p; } writer;
static void put_varint(writer *w, u64 v) { while (v >= 0x80) { *w->p++ = (u8)(v | 0x80); v >>= 7; } *w->p++ = (u8)v; }
static void put_bytes(writer *w, u32 field, const u8 *s, u32 len) { put_varint(w, (field << 3) | 2); put_varint(w, len); memcpy(w->p, s, len); w->p += len; }
static u32 str_len(const char *s) { u32 n = 0; while (s[n]) n++; return n; }
static void put_str(writer *w, u32 field, const char *s) { put_bytes(w, field, (const u8 *)s, str_len(s)); }
static long long region(const u8 *start, const u8 *end) { return ((long long)(u32)start << 32) | (u32)(end - start); }

// ---- configuration: the types listed in "drop", kept as (offset, length) pairs in a copy.
static u8 config[4096];
static u32 config_len;
static u32 drop_start[32], drop_len[32], drop_count;

EXPORT("eventplug_abi_version") int abi_version(void) { return 1; }

EXPORT("eventplug_alloc") void *alloc(int size) {
    heap_top = 0;
    return bump((u32)size);
}

EXPORT("eventplug_init") long long init(const u8 *ptr, int len) {
    static u8 response[128];
    writer w = { response };
    if ((u32)len > sizeof config) { put_str(&w, 1, "config is larger than 4096 bytes"); return region(response, w.p); }
    memcpy(config, ptr, (u32)len);
    config_len = (u32)len;
    drop_count = 0;
    u32 i = 0;
    // Find "drop", then read quoted strings up to the closing bracket.
    for (; i + 6 <= config_len; i++) if (bytes_eq(config + i, 6, "\"drop\"")) break;
    if (i + 6 > config_len) return 0;
    for (i += 6; i < config_len && config[i] != '['; i++) {}
    for (; i < config_len && config[i] != ']'; i++) {
        if (config[i] != '"') continue;
        u32 start = ++i;
        while (i < config_len && config[i] != '"') i++;
        if (drop_count == 32) { put_str(&w, 1, "at most 32 types in \"drop\""); return region(response, w.p); }
        drop_start[drop_count] = start; drop_len[drop_count] = i - start; drop_count++;
    }
    return 0;
}

EXPORT("eventplug_handle_event") long long handle_event(const u8 *ptr, int len) {
    reader request = { ptr, ptr + len }, envelope, type = { 0, 0 };
    u8 *out = bump(256);
    writer w = { out };
    if (!out) return 0;
    if (!find_bytes(request, 1, &envelope)) {
        put_varint(&w, (1 << 3) | 0); put_varint(&w, 2);            // verdict: ERROR
        put_str(&w, 3, "request without an event");
        return region(out, w.p);
    }
    find_bytes(envelope, 1, &type);
    u32 type_len = (u32)(type.end - type.p);
    for (u32 i = 0; i < drop_count; i++) {
        if (drop_len[i] != type_len) continue;
        u32 j = 0;
        while (j < type_len && config[drop_start[i] + j] == type.p[j]) j++;
        if (j == type_len) { put_varint(&w, (1 << 3) | 0); put_varint(&w, 1); return region(out, w.p); } // SKIP
    }
    if (bytes_eq(type.p, type_len, "user.login") && struct_bool(envelope, "success") == 0) {
        u8 alert[64];
        writer a = { alert };
        put_str(&a, 1, "failed login");
        put_varint(&a, (4 << 3) | 0); put_varint(&a, 3);             // severity: WARNING
        put_varint(&a, (5 << 3) | 0); put_varint(&a, 1);             // include_event
        host_alert(alert, (int)(a.p - alert));
        const char *line = "c-filter: failed login seen";
        host_log(2, (const u8 *)line, (int)str_len(line));
    }
    // Forward with one edit: processed_by = "eventplug-c".
    u8 edit[64];
    writer e = { edit };
    put_str(&e, 1, "processed_by");
    put_str(&e, 3, "\"eventplug-c\"");
    put_bytes(&w, 2, edit, (u32)(e.p - edit));
    return region(out, w.p);
}
