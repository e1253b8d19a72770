"""Feasibility probe (docs/results/recall.md): train the en-wiki-baseline model on en-wiki windows with planted facts, then recall vs distance.
Run from the repository root: python docs/results/recall-probe/probe.py hybrid 400 2048 out.json 4 bf16 [dense] [copy]"""
import json, os, random, sys, time
import numpy as np, torch
from agiformer.data import load_split
from agiformer.eval.recall import recall_accuracy, SYLLABLES
from agiformer.models import AGIFormer, AGIFormerConfig
from agiformer.precision import autocast

mixer, steps, seq_len, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
facts_per_row = int(sys.argv[5]) if len(sys.argv) > 5 else 3
precision = sys.argv[6] if len(sys.argv) > 6 else "fp32"
dense = len(sys.argv) > 7 and sys.argv[7] == 'dense'
torch.manual_seed(0)
cfg = AGIFormerConfig.preset("v2", d_model=256, n_layers=4, n_heads=4, window=64, head="gru", head_hidden=256,
                              head_ngrams=6, mixer=mixer)
model = AGIFormer(cfg)
if len(sys.argv) > 8:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__))); import copyfeat as C; C.install(model)
train = load_split("data", "en-wiki", "train"); test = load_split("data", "en-wiki", "test")
rng = random.Random(0)

def fact():
    key = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
    value = f"{rng.randrange(10000, 100000)}"
    return (f" The secret number of {key} is {value}. ", f" What is the secret number of {key}? The secret number of {key} is {value}.")

def row(L):
    if dense:
        facts = [fact() for _ in range(12)]
        head = "".join(n for n, _ in facts).encode()
        order = list(range(12)); rng.shuffle(order)
        tail = "".join(facts[i][1] for i in order[:8]).encode()
        gap = rng.randrange(0, L - len(head) - len(tail))
        start = rng.randrange(0, len(train) - L)
        text = bytearray(train[start:start + L])
        text[gap:gap] = head
        text[L - len(tail):] = b""
        text = text[:L - len(tail)] + tail
        return list(text[:L])
    start = rng.randrange(0, len(train) - L)
    text = bytearray(train[start:start + L])
    items = []
    for _ in range(facts_per_row):
        n, q = fact()
        p = rng.randrange(0, L - 200); d = rng.randrange(64, L - p)
        items += [(p, n.encode()), (p + d, q.encode())]
    for pos, s in sorted(items, reverse=True):
        text[pos:pos] = s
    return list(text[:L])

opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
t0 = time.time()
for step in range(steps):
    lr = 3e-3 * min(1, (step + 1) / 30) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
    for g in opt.param_groups: g["lr"] = lr
    x = torch.tensor([row(seq_len + 1) for _ in range(8 * 1024 // seq_len)])
    with autocast(torch.device("cpu"), precision):
        o = model.loss(x, plasticity=0.99, effort=torch.rand(1).item())
    o.loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
    if step % 25 == 0 or step == steps - 1:
        print(step, f"{o.bpb.item():.3f}", f"{time.time()-t0:.0f}s", flush=True)
res = recall_accuracy(model, test, [128, 256, 512, 1024, 2048], samples=20, plasticity=0.99, effort=1.0)
print(json.dumps(res)); json.dump(res, open(out, "w"))
