import sys, time, torch
from agiformer.models.agiformer import AGIFormer
from agiformer.models.config import AGIFormerConfig
from agiformer.models.byte_gpt import ByteGPT, ByteGPTConfig
torch.manual_seed(0)
def t(name, model, B, L, reps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (B, L))
    times = []
    for i in range(reps + 1):
        s = time.perf_counter()
        loss = model.loss(x).loss
        loss.backward(); opt.step(); opt.zero_grad()
        times.append(time.perf_counter() - s)
    st = min(times[1:])
    n = sum(p.numel() for p in model.parameters())
    print(f"{name:40s} params {n/1e6:5.2f}M  B{B}xL{L}  {st:6.2f} s/step  {B*L/st/1e3:6.1f} kB/s", flush=True)
base = dict(preset="v2", d_model=256, n_layers=4, n_heads=4, window=64, head="gru", head_hidden=256)
def agi(**kw):
    d = {**base, **kw}; p = d.pop("preset")
    return AGIFormer(AGIFormerConfig.preset(p, **d))
which = sys.argv[1:]
cands = {
 "demo": lambda: t("agi demo", agi(), 16, 1024),
 "demo-b8": lambda: t("agi demo b8", agi(), 8, 1024),
 "nores": lambda: t("agi reasoning0", agi(reasoning_steps=0), 16, 1024),
 "h128": lambda: t("agi head128", agi(head_hidden=128), 16, 1024),
 "attn": lambda: t("agi attention-only", agi(mixer="attention"), 16, 1024),
 "lean": lambda: t("agi attn r0 h128", agi(mixer="attention", reasoning_steps=0, head_hidden=128), 16, 1024),
 "gpt": lambda: t("gpt d256 l6 c512", ByteGPT(ByteGPTConfig(d_model=256, n_layers=6, n_heads=4)), 16, 512),
 "gpt192": lambda: t("gpt d192 l4 c512", ByteGPT(ByteGPTConfig(d_model=192, n_layers=4, n_heads=3)), 16, 512),
 "gpt128": lambda: t("gpt d128 l4 c256", ByteGPT(ByteGPTConfig(d_model=128, n_layers=4, n_heads=2)), 16, 256),
}
for w in which: cands[w]()
