// OLMo-7B adapted with open-instruct's Tulu 3 settings instead of the OLMo paper's (olmo7b.jsonnet keeps those:
// SFT lr 2e-6 for 3 epochs, DPO β 0.1 on summed log-probs). Only the adaptation steps differ; the corpus,
// pretraining and anneal are olmo7b's (cached when olmo7b ran). SFT: lr 5e-6, 2 epochs, warmup 3%; DPO: lr 5e-7,
// the length-normalized loss `dpo_norm` with β 5, 1 epoch, warmup 10%. Tulu 3 trains on 4096-token sequences;
// OLMo-7B's positions end at 2048, so max_length stays 2048. Give Tulu 3's data with `sft_data_files` /
// `preference_data_files` steps (README, "Fine-tune a released OLMo").
(import 'olmo7b.jsonnet') + {
  params+:: {
    name: 'olmo-7b-tulu3',
    sft+: { lr: 5e-6, epochs: 2, warmup_ratio: 0.03 },
    dpo+: { lr: 5e-7, epochs: 1, warmup_ratio: 0.1, loss_type: 'dpo_norm', beta: 5.0 },
  },
}
