#!/usr/bin/python3
"""
gen_cases.py OUTDIR: writes the ZIP test corpus that tests/unit/test_zipdir.c checks zip_open
against (run by tests/run-unit; needs numpy and Info-ZIP zip).

For every case NAME it writes OUTDIR/NAME.zip (the archive) and OUTDIR/NAME.expect:

    # description lines (any line starting with '#' is ignored)
    reject                      zip_open must fail
  or
    ok <count> <prefix>         zip_open must succeed with <count> members and za.prefix
    then one line per member, in central-directory order:
    <name-hex> <method> <crc32> <csize> <usize> <data_off> <err> <is_dir> <header_off> <mode> <mtime>

name-hex is the expected zip_member.name (UTF-8) in lower-case hex, '-' when empty. Numbers are
decimal. err is 1 when the member must be listed with zip_member.err < 0. A field written as
'*' is not checked (data_off is '*' whenever err is 1, since it is then undefined).

Expectations come from references that share no code with src/: Python's zipfile, numpy,
Info-ZIP zip, and archives laid out byte by byte below, whose values are known by
construction and are also cross-checked against zipfile whenever zipfile reads them the same
way. data_off is always taken from the local header as parsed here (offset + 30 + local name
length + local extra length), and the data found there is checked against the CRC before a
case is written.
"""
import io
import os
import shutil

import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)

FFFF = Z.U16
FFFFFFFF = Z.U32

DOS_TIME = (12 << 11) | (34 << 5) | (56 // 2)          # 12:34:56
DOS_DATE = ((2021 - 1980) << 9) | (3 << 5) | 14         # 2021-03-14
DOS_MTIME = int(time.mktime((2021, 3, 14, 12, 34, 56, 0, 0, -1)))

OUT = None
COUNT = 0


# ----------------------------------------------------------------------------------------------
# Writing cases

def verify_data(case, blob, m):
    """The member's data at data_off must decode to usize bytes with the right CRC."""
    raw = blob[m['data_off']:m['data_off'] + m['csize']]
    assert len(raw) == m['csize'], (case, m)
    if m['method'] == 8:
        d = zlib.decompressobj(-15)
        data = d.decompress(raw) + d.flush()
    elif m['method'] != 0:
        return  # other methods are decoded by libarchive: the integration tests check them
    else:
        assert m['method'] == 0, (case, m)
        data = raw
    assert len(data) == m['usize'], (case, m['name'], len(data), m['usize'])
    assert zlib.crc32(data) == m['crc'], (case, m['name'])


def fmt(v):
    return '*' if v is None else str(int(v))


def write_case(case, blob, members, prefix=0, desc='', crosscheck=True):
    """members: None for a rejected archive, else a list of expectation dicts."""
    global COUNT
    assert case.replace('_', '').isalnum(), case
    lines = ['# ' + line for line in desc.strip().splitlines()] if desc else []
    if members is None:
        lines.append('reject')
    else:
        lines.append('ok %d %d' % (len(members), prefix))
        for m in members:
            if not m['err'] and 'data_off' not in m:
                m['data_off'] = Z.local_data_offset(blob, m['header_off'])
                assert m['data_off'] is not None, (case, m)
            if not m['err']:
                if not m['is_dir'] or m['csize']:
                    verify_data(case, blob, m)
            name = m['name'].hex() if m['name'] else '-'
            lines.append(' '.join([
                name, fmt(m['method']), fmt(m['crc']), fmt(m['csize']), fmt(m['usize']),
                '*' if m['err'] else fmt(m['data_off']), '1' if m['err'] else '0',
                '1' if m['is_dir'] else '0', fmt(m['header_off']), fmt(m.get('mode')),
                fmt(m.get('mtime'))]))
        if crosscheck:
            check_with_zipfile(case, blob, members)
    with open(os.path.join(OUT, case + '.zip'), 'wb') as f:
        f.write(blob)
    with open(os.path.join(OUT, case + '.expect'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    COUNT += 1


def check_with_zipfile(case, blob, members):
    """Hand-built expectations must agree with CPython's zipfile where it reads the archive."""
    zf = zipfile.ZipFile(io.BytesIO(blob))
    infos = zf.infolist()
    assert len(infos) == len(members), (case, len(infos), len(members))
    for zi, m in zip(infos, members):
        got = (zi.orig_filename.encode('utf-8'), zi.compress_type, zi.CRC, zi.compress_size,
               zi.file_size, zi.header_offset)
        want = (m['name'], m['method'], m['crc'], m['csize'], m['usize'], m['header_off'])
        assert got == want, (case, got, want)


def central_mtime(extra, date_time):
    """UT extended timestamp of a central extra field if present, else the DOS time."""
    ut = Z.ut_mtime(extra)
    if ut is not None:
        return ut
    return int(time.mktime(tuple(date_time) + (0, 0, -1)))


def dir_entry(name, usize):
    """A name ending in '/' makes a directory entry, unless the member holds data: zipfile
    reads those bytes (and a deflated directory entry of no bytes is still a directory)."""
    return name.endswith(b'/') and usize == 0


def from_zipfile(blob, err=()):
    """Expectations read by CPython's zipfile (header offsets include any prepended data)."""
    zf = zipfile.ZipFile(io.BytesIO(blob))
    ms = []
    for i, zi in enumerate(zf.infolist()):
        ms.append(dict(
            name=zi.orig_filename.encode('utf-8'), method=zi.compress_type, crc=zi.CRC,
            csize=zi.compress_size, usize=zi.file_size, header_off=zi.header_offset,
            err=i in err, is_dir=dir_entry(zi.orig_filename.encode('utf-8'), zi.file_size),
            mode=zi.external_attr >> 16 if zi.create_system == 3 else 0,
            mtime=central_mtime(zi.extra, zi.date_time)))
    return ms


def reference_case(case, blob, prefix=0, err=(), desc=''):
    write_case(case, blob, from_zipfile(blob, err), prefix, desc, crosscheck=False)


# ----------------------------------------------------------------------------------------------
# Hand-built archives

def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


class M:
    """One member of a hand-built archive. Keywords change what is written:
    flags, local_name, local_extra (bytes or 'zip64'), local_sizes ('real', 'zero', 'ffff'),
    descriptor (None, 'sig', 'nosig', 'sig64', 'nosig64'), central_extra, zip64 (central fields
    to saturate: 'usize', 'csize', 'offset'), zip64_extra (raw override), zip64_first
    (ZIP64 extra before central_extra), comment, made_by, external, disk, csize/usize (central
    overrides), header_of (index of another member whose local header this entry reuses),
    header_off (central offset override, zip coordinates), no_local (write no local header;
    needs header_off), bad_sig, err (expected), mtime (expected override)."""

    def __init__(self, name, payload=b'', method=0, **kw):
        self.name = name if isinstance(name, bytes) else name.encode('utf-8')
        self.payload = payload
        self.method = method
        self.flags = kw.pop('flags', 0)
        self.local_name = kw.pop('local_name', None)
        self.local_extra = kw.pop('local_extra', b'')
        self.descriptor = kw.pop('descriptor', None)
        self.local_sizes = kw.pop('local_sizes', 'zero' if self.descriptor else 'real')
        self.central_extra = kw.pop('central_extra', b'')
        self.zip64 = kw.pop('zip64', ())
        self.zip64_extra = kw.pop('zip64_extra', None)
        self.zip64_first = kw.pop('zip64_first', True)
        self.comment = kw.pop('comment', b'')
        self.made_by = kw.pop('made_by', 20)
        self.external = kw.pop('external', 0)
        self.disk = kw.pop('disk', 0)
        self.c_csize = kw.pop('csize', None)
        self.c_usize = kw.pop('usize', None)
        self.header_of = kw.pop('header_of', None)
        self.no_local = kw.pop('no_local', False)
        self.c_offset = kw.pop('header_off', None)
        self.bad_sig = kw.pop('bad_sig', False)
        self.err = kw.pop('err', False)
        self.mtime = kw.pop('mtime', DOS_MTIME)
        assert not kw, kw
        if self.descriptor:
            self.flags |= 0x08


def build(members, order=None, comment=b'', zip64=None, eocd=None, trailing=b'',
          stub=b''):
    """Lays out members; returns (blob, expectations in central order, prefix).
    zip64: None, or a dict enabling the ZIP64 end record + locator, with optional keys
    saturate (True: classic record holds 0xFFFF/0xFFFFFFFF; 'all': disk fields too),
    extra (extensible data), disk, cd_disk, on_disk, total (record overrides),
    loc_disk, loc_offset, loc_total (locator overrides), size, offset (record overrides),
    garbage (write 56 junk bytes instead of the record).
    eocd: overrides of the classic record (ziptool.EOCD fields: disk, cd_disk, on_disk, total,
    cd_size, cd_offset, comment_len)."""
    use64 = zip64 is not None
    zip64 = zip64 or {}
    eocd = eocd or {}
    out = bytearray()
    for m in members:
        m.comp = deflate(m.payload) if m.method == 8 else m.payload
        m.crc = zlib.crc32(m.payload)
        m.off = None
        if m.header_of is not None or m.no_local:
            continue
        m.off = len(out)
        cs, us = len(m.comp), len(m.payload)
        if m.local_sizes == 'real':
            lf = (m.crc, cs, us)
        elif m.local_sizes == 'zero':
            lf = (0, 0, 0)
        else:
            lf = (0 if m.descriptor else m.crc, FFFFFFFF, FFFFFFFF)
        lx = Z.zip64_extra(us, cs) if m.local_extra == 'zip64' else m.local_extra
        ln = m.name if m.local_name is None else m.local_name
        out += Z.local_header(ln, lx, sig=0x05034B50 if m.bad_sig else Z.SIG_LOCAL,
                              version=45 if lx else 20, flags=m.flags, method=m.method,
                              time=DOS_TIME, date=DOS_DATE, crc=lf[0], csize=lf[1], usize=lf[2])
        out += m.comp
        if m.descriptor:
            assert m.descriptor in ('sig', 'nosig', 'sig64', 'nosig64'), m.descriptor
            out += Z.data_descriptor(m.crc, cs, us, signature=m.descriptor.startswith('sig'),
                                     zip64=m.descriptor.endswith('64'))
    for m in members:
        if m.header_of is not None:
            o = members[m.header_of]
            m.off, m.comp, m.crc, m.method, m.payload = o.off, o.comp, o.crc, o.method, o.payload
    cd_start = len(out)
    order = members if order is None else [members[i] for i in order]
    for m in order:
        cs = len(m.comp) if m.c_csize is None else m.c_csize
        us = len(m.payload) if m.c_usize is None else m.c_usize
        off = m.off if m.c_offset is None else m.c_offset
        vals = {'usize': us, 'csize': cs, 'offset': off}
        z = []
        for f in ('usize', 'csize', 'offset'):
            if f in m.zip64:
                z.append(vals[f])
                vals[f] = FFFFFFFF
        disk = 0 if 'disk' in m.zip64 else None
        zx = b''
        if m.zip64_extra is not None:
            zx = m.zip64_extra
        elif z or disk is not None:
            zx = Z.zip64_extra(*z, disk=disk)
        cx = zx + m.central_extra if m.zip64_first else m.central_extra + zx
        out += Z.central_header(m.name, cx, m.comment, made_by=m.made_by,
                                version=45 if zx else 20, flags=m.flags, method=m.method,
                                time=DOS_TIME, date=DOS_DATE, crc=m.crc, csize=vals['csize'],
                                usize=vals['usize'], disk=m.disk, external=m.external,
                                offset=vals['offset'])
    cd_size = len(out) - cd_start
    n = len(order)
    if use64:
        rec_off = len(out)
        if zip64.get('garbage'):
            out += b'\xa5' * 56
        else:
            out += Z.zip64_end_record(
                zip64.get('extra', b''), disk=zip64.get('disk', 0),
                cd_disk=zip64.get('cd_disk', 0), on_disk=zip64.get('on_disk', n),
                total=zip64.get('total', n), cd_size=zip64.get('size', cd_size),
                cd_offset=zip64.get('offset', cd_start))
        out += Z.zip64_locator(zip64.get('loc_offset', rec_off), disk=zip64.get('loc_disk', 0),
                               disks=zip64.get('loc_total', 1))
    sat = zip64.get('saturate')
    ev = dict(disk=0, cd_disk=0, on_disk=n, total=n, cd_size=cd_size, cd_offset=cd_start)
    if sat:
        ev.update(on_disk=FFFF, total=FFFF, cd_size=FFFFFFFF, cd_offset=FFFFFFFF)
    if sat == 'all':
        ev.update(disk=FFFF, cd_disk=FFFF)
    ev.update(eocd)
    out += Z.end_record(comment, **ev) + trailing
    blob = stub + bytes(out)
    p = len(stub)
    exp = []
    for m in order:
        usize = len(m.payload) if m.c_usize is None else m.c_usize
        exp.append(dict(
            name=m.name if m.flags & 0x800 else m.name.decode('cp437').encode('utf-8'),
            method=m.method, crc=m.crc,
            csize=len(m.comp) if m.c_csize is None else m.c_csize,
            usize=usize,
            header_off=p + (m.off if m.c_offset is None else m.c_offset),
            err=m.err, is_dir=dir_entry(m.name, usize),
            mode=m.external >> 16 if m.made_by >> 8 == 3 else 0, mtime=m.mtime))
    return blob, exp, p


def hand_case(case, members, desc, crosscheck=True, **kw):
    blob, exp, p = build(members, **kw)
    write_case(case, blob, exp, p, desc, crosscheck)
    return blob


def reject_case(case, blob, desc):
    write_case(case, blob, None, 0, desc)


def npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def zipfile_blob(entries, comment=b'', **kw):
    """entries: (name, data, compress_type) written with zipfile.writestr."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w', **kw) as z:
        for name, data, ct in entries:
            z.writestr(name, data, compress_type=ct)
        z.comment = comment
    return b.getvalue()


def savez(fn, **arrays):
    b = io.BytesIO()
    fn(b, **arrays)
    return b.getvalue()


# ----------------------------------------------------------------------------------------------
# The cases

def reference_cases(tmp):
    arrays = dict(a=np.arange(10), b=np.ones((3, 3)), c=np.float32(2.5),
                  d=np.zeros((0, 4), np.int16), e=np.arange(24, dtype='>u4').reshape(2, 3, 4),
                  f=np.asfortranarray(np.arange(12.0).reshape(3, 4)),
                  obj=np.array([{'k': 1}, None], dtype=object))
    arrays['grp/x'] = np.arange(5, dtype=np.int8)
    st = savez(np.savez, **arrays)
    reference_case('np_savez', st, desc='np.savez: stored members, numpy-style local ZIP64 extra')
    big = dict(arrays, big=np.repeat(np.arange(1000), 50))
    reference_case('np_savez_compressed', savez(np.savez_compressed, **big),
                   desc='np.savez_compressed: deflated members')
    keys = {'/abs': np.arange(3), '../up': np.arange(4), '': np.arange(5),
            'deep/er/still': np.arange(6), 'dot/./x': np.arange(2)}
    reference_case('np_savez_odd_keys', savez(np.savez, **keys),
                   desc="numpy keys '/abs', '../up', '' (.npy), nested")
    stub = b'#!/bin/sh\necho self-extracting stub\nexit 0\n' + bytes(range(256)) * 4
    reference_case('np_stub', stub + st, prefix=len(stub),
                   desc='cat stub file.npz: every offset shifted by the stub length')
    cst = savez(np.savez_compressed, a=np.arange(1000), b=np.eye(20))
    reference_case('np_compressed_stub', stub + cst, prefix=len(stub),
                   desc='cat stub compressed.npz')

    # zipfile writing to a stream it cannot seek: flag bit 3, local CRC/sizes 0, PK\7\8 descriptors
    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buf = bytearray()

        def writable(self):
            return True

        def write(self, d):
            self.buf += d
            return len(d)

    u = Unseekable()
    with zipfile.ZipFile(u, 'w') as z:
        z.writestr('stored.npy', npy(np.arange(100)))
        z.writestr('deflated.npy', npy(np.zeros(5000)), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr('empty', b'')
        with z.open('streamed.npy', 'w') as w:
            w.write(npy(np.arange(300)))
    blob = bytes(u.buf)
    ms = from_zipfile(blob)
    for m in ms:
        h = Z.LOCAL.unpack(blob, m['header_off'])
        assert h.flags & Z.FLAG_DESCRIPTOR and (h.crc, h.csize, h.usize) == (0, 0, 0)
    write_case('zipfile_unseekable', blob, ms, 0,
               'zipfile on an unseekable stream: data descriptors, local sizes 0', False)

    # 70,000 empty members: ZIP64 end record; the classic record has count 0xFFFF and real
    # size/offset (as CPython writes it).
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as z:
        for i in range(70000):
            z.writestr('m%05d' % i, b'' if i % 7 else b'x')
    blob = b.getvalue()
    assert Z.EOCD.unpack(blob, len(blob) - Z.EOCD.size).total == FFFF
    reference_case('zipfile_70000', blob, desc='70,000 members: ZIP64 count')

    reference_case('zipfile_utf8', zipfile_blob([
        ('grüße.npy', npy(np.arange(3)), zipfile.ZIP_STORED),
        ('日本/データ.npy', npy(np.arange(4)), zipfile.ZIP_DEFLATED),
        ('emoji/\U0001F600.npy', b'abc', zipfile.ZIP_STORED),
        ('plain.npy', b'', zipfile.ZIP_STORED)]),
        desc='UTF-8 names (zipfile sets flag bit 11 for non-ASCII names)')

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        reference_case('zipfile_duplicates', zipfile_blob([
            ('x.npy', b'first', zipfile.ZIP_STORED), ('x.npy', b'second', zipfile.ZIP_DEFLATED),
            ('y.npy', b'y', zipfile.ZIP_STORED), ('x.npy', b'third!', zipfile.ZIP_STORED)]),
            desc='duplicate names written by zipfile (each its own local header)')

    reference_case('zipfile_methods', zipfile_blob([
        ('stored', b's' * 100, zipfile.ZIP_STORED),
        ('bzip2', b'b' * 1000, zipfile.ZIP_BZIP2),
        ('deflated', b'd' * 1000, zipfile.ZIP_DEFLATED),
        ('lzma', b'l' * 1000, zipfile.ZIP_LZMA)]), err=set(),
        desc='bzip2 (12) and LZMA (14) members are listed as readable (decoded by libarchive)')

    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as z:
        for name, data, ct in [('f64.npy', npy(np.arange(50)), zipfile.ZIP_STORED),
                               ('f64c.npy', npy(np.arange(5000)), zipfile.ZIP_DEFLATED)]:
            zi = zipfile.ZipInfo(name, (2020, 1, 2, 3, 4, 6))
            zi.compress_type = ct
            with z.open(zi, 'w', force_zip64=True) as w:
                w.write(data)
    reference_case('zipfile_force_zip64', b.getvalue(),
                   desc='zipfile force_zip64 (what numpy does): ZIP64 extra in local headers only')

    base = [('a.npy', npy(np.arange(7)), zipfile.ZIP_STORED),
            ('b.npy', npy(np.arange(9)), zipfile.ZIP_DEFLATED)]
    reference_case('comment_0', zipfile_blob(base, b''), desc='no archive comment')
    reference_case('comment_1', zipfile_blob(base, b'!'), desc='1-byte archive comment')
    reference_case('comment_65535', zipfile_blob(base, bytes(i * 7 % 251 for i in range(65535))),
                   desc='65,535-byte archive comment (the maximum)')
    reference_case('comment_pk_text', zipfile_blob(base, b'PK' * 1000 + b'PK\x05'),
                   desc='comment full of PK fragments')
    reference_case('zipfile_empty', zipfile_blob([]), desc='empty archive: just an end record')
    reference_case('zipfile_empty_comment', zipfile_blob([], b'empty but commented'),
                   desc='empty archive with a comment')
    plain = zipfile_blob(base)
    reference_case('stub_cat', stub + plain, prefix=len(stub), desc='cat stub a.zip')

    if shutil.which('zip') is None:
        print('gen_cases: warning: Info-ZIP zip not found, its cases are skipped', file=sys.stderr)
        return plain
    tree = os.path.join(tmp, 'tree')
    os.makedirs(os.path.join(tree, 'dir', 'sub', 'deeper'))
    os.makedirs(os.path.join(tree, 'dir', 'empty'))
    with open(os.path.join(tree, 'dir', 'a.npy'), 'wb') as f:
        f.write(npy(np.arange(100)))
    with open(os.path.join(tree, 'dir', 'sub', 'b.txt'), 'wb') as f:
        f.write(b'\n'.join(b'line %d' % i for i in range(2000)))
    with open(os.path.join(tree, 'dir', 'sub', 'deeper', 'c.bin'), 'wb') as f:
        f.write(np.random.default_rng(1).bytes(3000))
    with open(os.path.join(tree, 'top.txt'), 'wb') as f:
        f.write(b'top\n')

    def infozip(out, *args, stdout=None):
        subprocess.run(['zip', '-q', *args], cwd=tree, check=True, stdout=stdout)
        return out

    def read(p):
        with open(p, 'rb') as f:
            return f.read()

    zp = os.path.join(tmp, 'iz_tree.zip')
    infozip(zp, '-r', zp, 'dir', 'top.txt')
    iz_tree = read(zp)
    reference_case('infozip_tree', iz_tree,
                   desc="Info-ZIP zip -r: 'dir/' entries, UT/ux extras, Unix modes")
    zp = os.path.join(tmp, 'iz_stored.zip')
    infozip(zp, '-0', '-r', zp, 'dir')
    reference_case('infozip_stored', read(zp), desc='Info-ZIP zip -0 -r (all stored)')
    zp = os.path.join(tmp, 'iz_fz.zip')
    infozip(zp, '-fz', '-r', zp, 'dir')
    reference_case('infozip_zip64', read(zp),
                   desc='Info-ZIP zip -fz: ZIP64 extras with unsaturated 32-bit fields')
    p = subprocess.run(['zip', '-q', '-r', '-', 'dir', 'top.txt'], cwd=tree, check=True,
                       stdout=subprocess.PIPE)
    ms = from_zipfile(p.stdout)
    assert all(Z.LOCAL.unpack(p.stdout, m['header_off']).flags & Z.FLAG_DESCRIPTOR
               for m in ms if not m['is_dir'])
    write_case('infozip_pipe', p.stdout, ms, 0,
               'Info-ZIP zip writing to a pipe: data descriptors', False)
    zp = os.path.join(tmp, 'iz_sfx.zip')
    with open(zp, 'wb') as f:
        f.write(stub + iz_tree)
    subprocess.run(['zip', '-q', '-A', zp], check=True)
    blob = read(zp)
    assert blob.startswith(stub)
    reference_case('infozip_sfx_adjusted', blob, prefix=0,
                   desc='cat stub a.zip; zip -A (offsets adjusted: no prefix left)')
    return plain


def hand_cases():
    a = npy(np.arange(40, dtype=np.int32))
    b = npy(np.linspace(0, 1, 300))

    hand_case('numpy_local64_real', [
        M('a.npy', a, 0, local_extra='zip64', local_sizes='real'),
        M('b.npy', b, 8, local_extra='zip64', local_sizes='real')],
        'numpy on Python <= 3.11.3: 20-byte ZIP64 local extra, real local sizes, '
        'no central ZIP64 extra')
    hand_case('numpy_local64_ffff', [
        M('a.npy', a, 0, local_extra='zip64', local_sizes='ffff'),
        M('b.npy', b, 8, local_extra='zip64', local_sizes='ffff')],
        'numpy on Python >= 3.11.4: 0xFFFFFFFF local sizes + ZIP64 local extra')
    hand_case('central64_all', [
        M('a.npy', a, 0, zip64=('usize', 'csize', 'offset')),
        M('b.npy', b, 8, zip64=('usize', 'csize', 'offset'), local_extra='zip64')],
        'central sizes and offset saturated, real values in the central ZIP64 extra')
    hand_case('central64_partial', [
        M('off.npy', a, 0, zip64=('offset',)),
        M('cs.npy', b, 8, zip64=('csize',)),
        M('us_off.npy', b, 8, zip64=('usize', 'offset')),
        M('disk.npy', a, 0, zip64=('usize', 'csize', 'offset', 'disk')),
        M('ut_first.npy', a, 0, zip64=('csize', 'offset'), zip64_first=False,
          central_extra=Z.ut_extra(1234567890), mtime=1234567890)],
        'only some central fields saturated; ZIP64 extra holds just those, in order '
        'usize, csize, offset (+ disk); a UT extra may precede it')
    hand_case('central64_unsaturated', [
        M('a.npy', a, 0, zip64_extra=Z.zip64_extra(1 << 40, 1 << 41, 1 << 42))],
        'a ZIP64 extra whose 32-bit fields are not saturated is ignored')
    hand_case('central_ut_mtime', [
        M('t.npy', a, 0, central_extra=Z.ut_extra(1600000000)
          + Z.extra_field(Z.ID_UX, struct.pack('<HH', 0xABCD, 0x1234)), mtime=1600000000),
        M('neg.npy', a, 0, central_extra=Z.ut_extra(-86400),
          mtime=-86400),
        M('noflag.npy', a, 0, central_extra=Z.ut_extra(99, flags=0)),
        M('unix.npy', a, 0, made_by=(3 << 8) | 30, external=(0o100644 << 16) | 0x20),
        M('unixdir/', b'', 0, made_by=(3 << 8) | 30, external=(0o40755 << 16) | 0x10),
        M('dos.npy', a, 0, made_by=(0 << 8) | 20, external=0x20),
        M('ntfs.npy', a, 0, made_by=(10 << 8) | 20, external=(0o100755 << 16) | 0x20)],
        'UT timestamps (flag bit 0), Unix modes from made-by 3; other made-by values (DOS, '
        'NTFS) give mode 0 whatever the high half of the external attributes holds')

    members = [M('a.npy', a), M('b.npy', b, 8), M('c.npy', b'')]
    hand_case('eocd64_real', members, 'ZIP64 end record + locator; classic record holds '
              'the real values', zip64={})
    hand_case('eocd64_saturated', members, 'ZIP64 end record; classic record saturated',
              zip64={'saturate': True})
    hand_case('eocd64_saturated_all', members,
              'ZIP64 end record; classic record saturated including 0xFFFF disk numbers',
              zip64={'saturate': 'all'})
    # classic record claims a CD made of the last entry only (plausible, self-consistent):
    # the ZIP64 record, which lists all three, must win.
    blob, _, _ = build(members, zip64={})
    cd_start = zipfile.ZipFile(io.BytesIO(blob)).start_dir
    first_two = 46 * 2 + len(b'a.npy') + len(b'b.npy')
    hand_case('eocd64_prefer_zip64', members,
              'classic record holds different real values (1 entry); the ZIP64 record wins',
              zip64={}, eocd=dict(on_disk=1, total=1, cd_offset=cd_start + first_two,
                                  cd_size=46 + len(b'c.npy')))
    hand_case('eocd64_extensible', members,
              'ZIP64 end record with extensible data (locator points at it)',
              crosscheck=False, zip64={'extra': b'\x01\x00\x04\x00abcd'})
    hand_case('eocd64_stub', members,
              'stub + ZIP64 archive: the locator offset is stale by the stub length',
              zip64={'saturate': True}, stub=b'MZ' + b'\x90' * 5000)
    hand_case('eocd64_stub_real', members,
              'stub + ZIP64 archive with real classic values', zip64={},
              stub=b'#!stub\n' * 300)

    hand_case('descriptor_sig', [
        M('a.npy', a, 0, descriptor='sig'), M('b.npy', b, 8, descriptor='sig'),
        M('e', b'', 0, descriptor='sig')],
        'flag bit 3, local CRC/sizes 0, descriptors with PK\\7\\8')
    hand_case('descriptor_nosig', [
        M('a.npy', a, 0, descriptor='nosig'), M('b.npy', b, 8, descriptor='nosig')],
        'flag bit 3, descriptors without signature')
    hand_case('descriptor_64', [
        M('a.npy', a, 0, descriptor='sig64', local_sizes='ffff', local_extra='zip64'),
        M('b.npy', b, 8, descriptor='nosig64', local_sizes='ffff', local_extra='zip64')],
        'flag bit 3 with 64-bit descriptors, local sizes 0xFFFFFFFF + ZIP64 local extra')

    ab = [M('a.npy', a), M('b.npy', b, 8)]
    fake = Z.end_record(on_disk=7, total=7, cd_size=1000, cd_offset=5)
    hand_case('comment_fake_eocd', ab,
              'comment holds a fake end record (comment length 0) in its middle',
              crosscheck=False, comment=b'fake: ' + fake + b' :end')
    fake_long = Z.end_record(on_disk=1, total=1, cd_size=46, cd_offset=0, comment_len=0xFFFF)
    hand_case('comment_fake_eocd_long', ab,
              'comment holds a fake end record whose comment would run past the end of file',
              crosscheck=False, comment=b'x' + fake_long + b'tail')
    hand_case('trailing_garbage', ab,
              'bytes after the end record beyond its declared comment', trailing=b'\0junk' * 20)
    hand_case('eocd_count_mismatch', ab,
              'classic record declares 5 entries; the central directory holds 2',
              eocd=dict(on_disk=5, total=5))

    high = bytes(range(0x80, 0x100))
    hand_case('cp437_names', [
        M(high[:64] + b'.npy', a), M(b'dir\x80\x9a/' + high[64:] + b'.npy', b'xyz'),
        M(b'caf\x82.npy', b'')],
        'names with bytes >= 0x80 and no flag bit 11 are CP437')
    hand_case('utf8_names_raw', [
        M('grüße/日本.npy'.encode(), a, flags=0x800),
        M(b'nul\x00inside.npy', b'n', flags=0x800),
        M(b'nul\x00cp437\x82', b'm'),
        M(b'', b'empty name'),
        M('ascii.npy', b'', flags=0x800)],
        'flag bit 11 names kept as bytes; NUL bytes inside names; an empty name')
    hand_case('local_name_differs', [
        M('short.npy', a, local_name=b'a-much-longer-local-name.npy', err=True),
        M('b.npy', b, 8, local_name=b'', local_extra=b'\xfe\xca\x03\x00abc', err=True),
        M('c.npy', b, 8, local_extra=b'\xfe\xca\x03\x00abc')],
        'a local header naming another member is flagged (as CPython does); a differing '
        'local extra is fine: data follows the LOCAL extra')
    hand_case('cd_order_reversed', [M('a.npy', a), M('b.npy', b, 8), M('c.npy', b'cc')],
              'central directory lists members in reverse file order', order=[2, 1, 0])
    hand_case('dir_entries', [
        M('d/'), M('d/x.npy', a), M('d/e/'), M('d/e/y.npy', b, 8), M('z/')],
        'hand-made directory entries')
    hand_case('dir_named_data', [
        M('data.npy/', b'\x93NUMPY' + bytes(range(14))), M('d/', b'', 8), M('z/', b'xyz', 8),
        M('zd/', b'', zip64=('usize', 'csize')), M('zf/', b'4', zip64=('usize', 'csize'))],
        "names ending in '/' with data are files (zipfile reads the bytes); a deflated "
        'directory entry of no bytes (csize 2) and ZIP64 sizes of 0 are still directories')
    hand_case('entry_comments', [
        M('a.npy', a, comment=b'first comment'), M('b.npy', b, 8, comment=b'PK\x01\x02 nope')],
        'central entries with comments')
    hand_case('empty_members', [M('e1'), M('e2', b'', 8), M('e3')],
              'empty members, stored and deflated')

    # Per-member errors: listed, but flagged.
    aes = struct.pack('<HHH2sBH', 0x9901, 7, 2, b'AE', 3, 8)
    hand_case('err_encrypted', [
        M('plain.npy', a), M('enc.npy', b'\x13' * 60, 0, flags=1),
        M('enc_deflated.npy', b'\x77' * 60, 8, flags=1),
        M('strong.npy', b'\x13' * 60, 0, flags=0x41, err=True),
        M('aes.npy', b'\x55' * 60, 99, flags=1, central_extra=aes),
        M('aes_noextra.npy', b'\x55' * 60, 99, flags=1, err=True),
        M('aes_unknown.npy', b'\x55' * 60, 99, flags=1, err=True,
          central_extra=aes[:-2] + struct.pack('<H', 9))],
        'flag bit 0 (encrypted: ZipCrypto, or WinZip AES with its 0x9901 extra naming a known '
        'method) is left to libarchive; strong encryption (bit 6) and AES without a valid extra '
        'are flagged', crosscheck=True)
    hand_case('err_methods', [
        M('ok.npy', a), M('bzip2', b'B' * 50, 12), M('aes', b'A' * 50, 99, err=True),
        M('deflate64', b'D' * 50, 9, err=True), M('zstd', b'Z' * 50, 93),
        M('ok2.npy', b, 8), M('m200', b'Q' * 50, 200, err=True)],
        'methods 99 (AES), 9 (deflate64) and 200 are flagged; 12 and 93 are left to libarchive')
    hand_case('err_stored_sizes', [
        M('bad', b'0123456789', 0, usize=20, err=True), M('good', a)],
        'stored member whose central csize and usize differ')
    hand_case('err_local_sig', [
        M('good1', a), M('bad', b'xyz', bad_sig=True, err=True), M('good2', b, 8)],
        "local header signature corrupted (PK\\3\\5)")
    hand_case('err_data_past_cd', [
        M('good', a), M('long', b'0123456789', csize=30, usize=30, err=True)],
        'last member data (per central sizes) runs into the central directory')
    blob, exp, _ = build([M('good', a), M('x', b)])
    cd_start = zipfile.ZipFile(io.BytesIO(blob)).start_dir
    hand_case('err_header_past_cd', [
        M('good', a), M('x', b), M('inside_cd', b'', header_off=cd_start + 4, no_local=True,
                                     err=True),
        M('far', b'', header_off=0x7FFF0000, no_local=True, err=True)],
        'local header offsets inside or past the central directory', crosscheck=False)
    blob = hand_case('err_header_near_cd', [
        M('good', a), M('x', b),
        M('near_cd', b'', header_off=cd_start - 10, no_local=True, err=True)],
        'a bogus entry whose local header would straddle the central directory start; it has '
        'no local header, so the data of x (where it points) runs into no header: only the '
        'bogus entry is flagged', crosscheck=False)
    assert zipfile.ZipFile(io.BytesIO(blob)).start_dir == cd_start
    hand_case('err_bogus_offset_into_data', [
        M('host', b'h' * 200), M('bogus', b'', header_off=100, no_local=True, err=True),
        M('after', b'after')],
        'a central entry pointing into the middle of another member data, where there is no '
        'local header: only the bogus entry is flagged, the host stays readable',
        crosscheck=False)
    # csize is patched after layout: build once to learn the compressed size.
    m0 = M('first', b'f' * 500, 8, err=True)
    build([m0, M('second', a)])
    hand_case('err_overlap_next', [
        M('first', b'f' * 500, 8, csize=len(m0.comp) + 10, err=True), M('second', a),
        M('third', b'third')],
        'first member data (central csize + 10) runs into the next local header')
    hand_case('err_shared_header', [
        M('a', a), M('b', b, 8), M('alias_of_a', header_of=0, err=True)],
        'two central entries point at one local header: the earlier (in CD order) is flagged')
    hand_case('err_shared_header3', [
        M('x1', b'x', header_of=2, err=True), M('y', b'y'), M('x', a),
        M('x2', b'x', header_of=2, err=True), M('z', b'zz')],
        'three central entries share one local header: all but the last are flagged')
    inner_local = Z.local_header(b'k', time=DOS_TIME, date=DOS_DATE, crc=zlib.crc32(b'kernel'),
                                 csize=6, usize=6) + b'kernel'
    hand_case('err_quoted_overlap', [
        M('outer', inner_local, err=True),
        M('k', b'kernel', header_off=30 + len(b'outer'), no_local=True)],
        'zip-bomb style: one member data contains another member local header and data',
        crosscheck=False)
    hand_case('err_other_disk', [M('a', a), M('b', b, 8, disk=1, err=True)],
              'central entry says its data is on disk 1')
    hand_case('err_zip64_missing', [
        M('a', a, zip64_extra=b'', csize=FFFFFFFF, err=True), M('b', b, 8),
        M('short', a, zip64_extra=Z.extra_field(Z.ID_ZIP64, bytes(4)), usize=FFFFFFFF, err=True)],
        'central field saturated but no (or too short a) ZIP64 extra', crosscheck=False)


def reject_cases(plain, tmp):
    reject_case('empty_file', b'', 'empty file')
    garbage = np.random.default_rng(7).bytes(5000)
    assert b'PK\x05\x06' not in garbage
    reject_case('garbage', garbage, '5000 random bytes')
    reject_case('tiny', b'PK\x05\x06' + bytes(10), '14 bytes: shorter than an end record')
    reject_case('text', b'this is not a zip file\n' * 10, 'text file')
    zf = zipfile.ZipFile(io.BytesIO(plain))
    cd = zf.start_dir
    end = len(plain) - 22
    hdr1 = zf.infolist()[1].header_offset
    for case, cut, what in [('trunc_eocd_1', len(plain) - 1, 'last byte of the end record'),
                            ('trunc_eocd_10', len(plain) - 10, 'inside the end record'),
                            ('trunc_eocd_start', end + 2, 'two bytes into the end record'),
                            ('trunc_cd', cd + 50, 'inside the central directory'),
                            ('trunc_cd_start', cd, 'right before the central directory'),
                            ('trunc_local', hdr1 + 12, 'inside the second local header'),
                            ('trunc_data', hdr1 - 5, 'inside the first member data')]:
        reject_case(case, plain[:cut], 'truncated ' + what)
    reject_case('cut_front', plain[100:], 'first 100 bytes removed: the central directory '
                'would start before the file')
    reject_case('cut_middle', plain[:40] + plain[60:], '20 bytes cut from member data')

    def patch_eocd(**kw):
        return plain[:end] + Z.EOCD.pack(**Z.EOCD.unpack(plain, end)._replace(**kw)._asdict())

    reject_case('eocd_comment_past_eof', patch_eocd(comment_len=100),
                'end record comment length runs past the end of file')
    reject_case('cd_offset_past_eof', patch_eocd(cd_offset=len(plain) + 1000),
                'central directory offset past the end of file')
    reject_case('cd_offset_huge', patch_eocd(cd_offset=0xFFFFFFF0),
                'central directory offset 2^32-16')
    reject_case('cd_size_past_eof', patch_eocd(cd_size=len(plain) * 2),
                'central directory size past the end of file')
    reject_case('cd_size_into_eocd', patch_eocd(cd_size=end - cd + 1),
                'central directory would overlap the end record')
    reject_case('multidisk_disk', patch_eocd(disk=1), 'end record: this disk is 1')
    reject_case('multidisk_cd_disk', patch_eocd(cd_disk=1), 'end record: CD starts on disk 1')
    reject_case('multidisk_counts', patch_eocd(on_disk=1), 'end record: entries on this disk '
                'differ from the total')
    b = bytearray(plain)
    b[cd:cd + 4] = b'PK\x01\x03'
    reject_case('cd_bad_sig', bytes(b), 'first central entry signature corrupted')
    b = bytearray(plain)
    second = Z.parse(plain).entries[1].cd_off
    assert plain[second:second + 4] == b'PK\x01\x02'
    b[second:second + 4] = b'XXXX'
    reject_case('cd_bad_sig_second', bytes(b), 'second central entry signature corrupted')
    b = bytearray(plain)
    at = second + Z.CENTRAL.offset('name_len')
    b[at:at + 2] = struct.pack('<H', 500)
    reject_case('cd_entry_truncated', bytes(b), 'last central entry name runs past the '
                'central directory')
    reject_case('cd_size_short', patch_eocd(cd_size=end - cd - 10),
                'central directory size ends inside the last entry')

    ms = [M('a', b'abc'), M('b', b'defg', 8)]

    def z64(case, desc, **kw):
        blob, _, _ = build(ms, zip64=kw)
        reject_case(case, blob, desc)

    z64('zip64_record_garbage', 'locator present, record replaced by junk', garbage=True)
    z64('zip64_locator_offset_bad', 'locator points to junk and the record is not right '
        'before it', garbage=True, loc_offset=3)
    z64('zip64_locator_disk', 'locator: record on disk 1', loc_disk=1)
    z64('zip64_locator_total', 'locator: 2 disks in total', loc_total=2)
    z64('zip64_record_disk', 'ZIP64 record: this disk is 1', disk=1)
    z64('zip64_record_cd_disk', 'ZIP64 record: CD starts on disk 1', cd_disk=1)
    z64('zip64_record_counts', 'ZIP64 record: entries on this disk differ from the total',
        on_disk=1)
    z64('zip64_cd_past', 'ZIP64 record: central directory offset past the record',
        offset=1 << 40)
    z64('zip64_cd_size_past', 'ZIP64 record: central directory size past the record',
        size=1 << 33)


def main():
    global OUT
    if len(sys.argv) != 2:
        sys.exit('usage: gen_cases.py OUTDIR')
    OUT = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plain = reference_cases(tmp)
        hand_cases()
        reject_cases(plain, tmp)
    print('gen_cases: %d cases in %s' % (COUNT, OUT), file=sys.stderr)


if __name__ == '__main__':
    main()
