"""Diagnostic: can a linear head on the *frozen* joint encoding of (label, text) tell true
pairs from false ones? (No training of the LM, no prefix: the best a head alone can do.)

    python scripts/pair_probe.py minilm      # 600 SST-2 train texts, 300 dev texts

Prints the argmax-over-labels accuracy of a logistic probe for each pooling.
"""
import torch, numpy as np, sys
from ltune_cli.config import compose
from ltune_cli.models.backbone import load_backbone
from ltune_cli.data import load_splits
torch.set_num_threads(2)
model = sys.argv[1]
cfg = compose([f"model={model}", "dataset.train_limit=600", "dataset.eval_limit=300"])
bb = load_backbone(cfg.model, cfg.hardware)
data = load_splits(cfg.dataset)
labels = ["negative", "positive"]
def feats(exs, pooling):
    out = {}
    for k, lab in enumerate(labels):
        rows=[]
        for i in range(0, len(exs), 32):
            chunk = exs[i:i+32]
            if bb.geo.kind == "encoder":
                enc = bb.tokenizer([lab]*len(chunk), [e.text for e in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
            else:
                bb.tokenizer.padding_side="right"
                if bb.tokenizer.pad_token is None: bb.tokenizer.pad_token = bb.tokenizer.eos_token
                enc = bb.tokenizer([f"{lab}\n{e.text}" for e in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
            with torch.no_grad():
                h = bb.hidden_states(enc["input_ids"], enc["attention_mask"])
            bb.pooling = pooling
            rows.append(bb.pool(h, enc["attention_mask"]))
        out[k] = torch.cat(rows).numpy()
    return out
plain_pool = ["cls","mean"] if bb.geo.kind=="encoder" else ["last","mean"]
for pooling in plain_pool:
    tr, ev = feats(data.train, pooling), feats(data.eval, pooling)
    ytr = np.array([e.label for e in data.train]); yev = np.array([e.label for e in data.eval])
    # pair dataset: x = feat(label k, text), y = (k == label)
    X = np.concatenate([tr[0], tr[1]]); Y = np.concatenate([ytr==0, ytr==1]).astype(float)
    Xt = torch.tensor(X, dtype=torch.float32); Yt = torch.tensor(Y, dtype=torch.float32)
    mu, sd = Xt.mean(0), Xt.std(0)+1e-6
    w = torch.zeros(X.shape[1], requires_grad=True); b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w,b], max_iter=200)
    def closure():
        opt.zero_grad(); l = torch.nn.functional.binary_cross_entropy_with_logits(((Xt-mu)/sd)@w+b, Yt) + 1e-3*(w**2).sum(); l.backward(); return l
    opt.step(closure)
    def score(f): return (((torch.tensor(f)-mu)/sd)@w+b).detach().numpy()
    s0, s1 = score(ev[0]), score(ev[1])
    acc = ((s1 > s0).astype(int) == yev).mean()
    # and the plain probe of text features for comparison: sentiment directly from feat(label0,text)
    print(model, pooling, "frozen joint-encoding linear probe: eval accuracy (argmax over labels) %.3f" % acc, flush=True)
