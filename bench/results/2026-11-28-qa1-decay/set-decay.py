"""Copy an ARMT model file with `memory.decay` set to λ in its config (the tensors untouched):
python3 set-decay.py MODEL OUT LAMBDA"""
import json, struct, sys
src, dst, lam = sys.argv[1], sys.argv[2], float(sys.argv[3])
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8+n])
cfg = json.loads(h['__metadata__']['config'])
cfg['memory']['decay'] = lam
h['__metadata__']['config'] = json.dumps(cfg)
hb = json.dumps(h).encode()
hb += b' ' * ((8 - len(hb) % 8) % 8)
open(dst, 'wb').write(struct.pack('<Q', len(hb)) + hb + b[8+n:])
