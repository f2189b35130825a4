"""Beam search for one pair as one ONNX graph: a `Loop` over the decoder step (factory side, experimental).

The body runs `edgecc.decoding.beam_search` for one pair (n = 1, K beams in one batch), step for step: the
decoder, log-softmax in float64, the 2K best candidates (TopK), the candidates taken in order until K live beams
are filled (a finishing one, <end> or the last step, is scored by logprob / len**length_penalty), the best
finished hypothesis kept, the stop rule (K finished and the best beats every live beam), the state reordered.

    model = build_beam("edgecc/models/default/int8/decoder.onnx", end_token=2)
    # inputs: the decoder's (token [K] = <start>, memory and zero state repeated K times), max_len int64 [],
    # length_penalty float64 []; outputs: best [max_len] int64 (the best hypothesis, zero-padded), best_len int64 [],
    # steps int64 [] (decoder steps run). K = 1 is greedy decoding: the same tokens as edgecc.decoding.greedy.

Exact ties between candidates are broken by position (TopK: lower index first), where NumPy's argsort may order
them otherwise; the build checks the tokens against the Python search (`decode_loop.add_to_bundle`).
"""

from __future__ import annotations

from pathlib import Path


def build_beam(decoder_path: str | Path, end_token: int):
    import onnx
    from onnx import TensorProto, helper

    from .decode_loop import step_nodes

    p = "bl_"
    dec, inputs, state_in, outs, nodes = step_nodes(decoder_path, p)
    by_name = {i.name: i for i in inputs}
    D, I64, B = TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL

    def c(name, dtype, vals, dims=()):
        return helper.make_node("Constant", [], [p + name], value=helper.make_tensor(p + name + "_t", dtype,
                                                                                     list(dims), vals))

    def n(op, ins, out, **kw):
        return helper.make_node(op, [x if x.startswith(("bl_", "max_len", "length_penalty")) or x == "" else p + x
                                     for x in ins], [p + out], **kw)

    logits = outs[0]
    body = [*nodes,
            c("end", I64, [end_token]), c("one", I64, [1]), c("zero", I64, [0]),
            c("ninf", D, [float("-inf")]), c("ax1", I64, [1], [1]), c("ax0", I64, [0], [1]),
            # log-softmax in float64 over the vocabulary, as the Python search does
            helper.make_node("Cast", [logits], [p + "logits_d"], to=D),
            n("LogSoftmax", ["logits_d"], "logp", axis=-1),  # [K,V]
            n("Shape", ["logp"], "lshape"),
            n("Gather", ["lshape", "one"], "V", axis=0), n("Gather", ["lshape", "zero"], "K", axis=0),
            n("Unsqueeze", ["scores", "ax1"], "scores_col"),
            n("Add", ["scores_col", "logp"], "cand2"),
            c("neg1_1d", I64, [-1], [1]),
            n("Reshape", ["cand2", "neg1_1d"], "cand"),  # [K*V]
            n("Add", ["K", "K"], "K2"), n("Unsqueeze", ["K2", "ax0"], "K2_1d"),
            n("TopK", ["cand", "K2_1d"], "topv", largest=1, sorted=1),
            ]
    # TopK has two outputs: fix the node by hand
    topk = body[-1]
    topk.output.append(p + "topi")
    body += [
        n("Div", ["topi", "V"], "b"), n("Mod", ["topi", "V"], "w"),
        # a candidate finishes on <end> or at the last step
        n("Sub", ["max_len", "one"], "last_t"), n("Equal", ["iter", "last_t"], "is_last"),
        n("Equal", ["w", "end"], "is_end"), n("Or", ["is_end", "is_last"], "is_fin"),
        n("Not", ["is_fin"], "is_live"), n("Cast", ["is_live"], "live_i", to=I64),
        n("CumSum", ["live_i", "zero"], "live_before", exclusive=1),
        n("Less", ["live_before", "K"], "processed"),  # the Python loop stops once K live beams are taken
        n("And", ["is_fin", "processed"], "fin_taken"), n("And", ["is_live", "processed"], "live_taken"),
        # length-normalised scores of finishing candidates: cand / (t+1)**length_penalty
        n("Add", ["iter", "one"], "t1"), n("Cast", ["t1"], "t1_d", to=D),
        n("Pow", ["t1_d", "length_penalty"], "norm"),
        n("Div", ["topv", "norm"], "fin_score"),
        n("Where", ["fin_taken", "fin_score", "ninf"], "fin_masked"),
        n("ReduceMax", ["fin_masked"], "fin_best", keepdims=0),
        n("ArgMax", ["fin_masked"], "fin_arg", axis=0, keepdims=0),
        n("Cast", ["fin_taken"], "fin_i", to=I64), n("ReduceSum", ["fin_i"], "fin_count", keepdims=0),
        n("Add", ["n_fin", "fin_count"], "n_fin_out"),
        n("Greater", ["fin_best", "best"], "better"),
        n("Max", ["best", "fin_best"], "best_out"),
        # the best finishing candidate's sequence, zero-padded to max_len
        n("Gather", ["b", "fin_arg"], "fb"), n("Gather", ["w", "fin_arg"], "fw"),
        n("Gather", ["seqs", "fb"], "fseq", axis=0),  # [t]
        n("Unsqueeze", ["fw", "ax0"], "fw_1d"),
        n("Concat", ["fseq", "fw_1d"], "fseq1", axis=0),  # [t+1]
        n("Unsqueeze", ["max_len", "ax0"], "ml1d"),
        n("ConstantOfShape", ["ml1d"], "zeros_ml", value=helper.make_tensor(p + "z", I64, [1], [0])),
        n("Concat", ["fseq1", "zeros_ml"], "fseq_pad_long", axis=0),
        n("Slice", ["fseq_pad_long", "ax0", "ml1d", "ax0"], "fseq_pad"),
        n("Where", ["better", "fseq_pad", "best_seq"], "best_seq_out"),
        n("Where", ["better", "t1", "best_len"], "best_len_out"),
        # the first K live candidates become the beams; missing ones: score -inf, token 0, parent 0, zero sequence
        n("NonZero", ["live_taken"], "live_pos2"), n("Reshape", ["live_pos2", "neg1_1d"], "live_pos"),
        n("Shape", ["live_pos"], "nl_1d"),
        n("Unsqueeze", ["K", "ax0"], "K_1d"),
        n("ConstantOfShape", ["K_1d"], "zeros_k", value=helper.make_tensor(p + "zk", I64, [1], [0])),
        n("Concat", ["live_pos", "zeros_k"], "pos_long", axis=0),
        n("Slice", ["pos_long", "ax0", "K_1d", "ax0"], "pos"),  # [K]
        n("Range", ["zero", "K", "one"], "j"), n("Reshape", ["nl_1d", "neg1_1d"], "nl_r"),
        n("Squeeze", ["nl_r", "ax0"], "nl"),
        n("Less", ["j", "nl"], "valid"),
        n("Gather", ["topv", "pos"], "sc_raw"), n("Where", ["valid", "sc_raw", "ninf"], "scores_out"),
        n("Gather", ["b", "pos"], "src_raw"), n("Where", ["valid", "src_raw", "zero"], "src"),
        n("Gather", ["w", "pos"], "w_raw"), n("Where", ["valid", "w_raw", "zero"], "token_out"),
        n("Gather", ["seqs", "src"], "par", axis=0),  # [K,t]
        n("Unsqueeze", ["token_out", "ax1"], "tok_col"),
        n("Concat", ["par", "tok_col"], "seqs_new", axis=1),  # [K,t+1]
        n("Unsqueeze", ["valid", "ax1"], "valid_col"),
        n("Where", ["valid_col", "seqs_new", "zero"], "seqs_out"),
        # stop: K finished and the best finished beats every live beam's score / (t+1)**lp
        n("ReduceMax", ["scores_out"], "live_best", keepdims=0), n("Div", ["live_best", "norm"], "live_norm"),
        n("GreaterOrEqual", ["best_out", "live_norm"], "beats"),
        n("GreaterOrEqual", ["n_fin_out", "K"], "enough"),
        n("And", ["enough", "beats"], "done"), n("Not", ["done"], "cond_out"),
        n("Identity", ["t1"], "steps_out"),  # decoder steps run so far
    ]
    # the state follows each beam's parent
    for s, o in zip(state_in, outs[1:]):
        body.append(helper.make_node("Gather", [o, p + "src"], [p + s + "_out"], axis=1))

    def vi(name, like=None, dtype=None, shape=None):
        if like is not None:
            t = by_name[like].type.tensor_type
            return helper.make_tensor_value_info(name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim])
        return helper.make_tensor_value_info(name, dtype, shape)

    body_in = [vi(p + "iter", dtype=I64, shape=[]), vi(p + "cond", dtype=B, shape=[]),
               vi(p + "token", "token"), *[vi(p + s, s) for s in state_in],
               vi(p + "scores", dtype=D, shape=["K"]), vi(p + "seqs", dtype=I64, shape=["K", "T"]),
               vi(p + "n_fin", dtype=I64, shape=[]), vi(p + "best", dtype=D, shape=[]),
               vi(p + "best_seq", dtype=I64, shape=["L"]), vi(p + "best_len", dtype=I64, shape=[]),
               vi(p + "steps", dtype=I64, shape=[])]
    body_out = [vi(p + "cond_out", dtype=B, shape=[]), vi(p + "token_out", "token"),
                *[vi(p + s + "_out", s) for s in state_in],
                vi(p + "scores_out", dtype=D, shape=["K"]), vi(p + "seqs_out", dtype=I64, shape=["K", "T1"]),
                vi(p + "n_fin_out", dtype=I64, shape=[]), vi(p + "best_out", dtype=D, shape=[]),
                vi(p + "best_seq_out", dtype=I64, shape=["L"]), vi(p + "best_len_out", dtype=I64, shape=[]),
                vi(p + "steps_out", dtype=I64, shape=[])]
    body_graph = helper.make_graph(body, "beam_step", body_in, body_out)

    main = [
        helper.make_node("Shape", ["token"], ["K_1d"]),
        helper.make_node("Constant", [], ["zero_i"], value=helper.make_tensor("zero_i_t", I64, [], [0])),
        helper.make_node("Constant", [], ["zero_d"], value=helper.make_tensor("zero_d_t", D, [], [0.0])),
        helper.make_node("Constant", [], ["ninf_d"], value=helper.make_tensor("ninf_d_t", D, [], [float("-inf")])),
        helper.make_node("Constant", [], ["one_i"], value=helper.make_tensor("one_i_t", I64, [], [1])),
        helper.make_node("Constant", [], ["true_b"], value=helper.make_tensor("true_b_t", B, [], [1])),
        helper.make_node("Squeeze", ["K_1d"], ["K_s"]),
        helper.make_node("Range", ["zero_i", "K_s", "one_i"], ["jj"]),
        helper.make_node("Equal", ["jj", "zero_i"], ["first"]),
        helper.make_node("Where", ["first", "zero_d", "ninf_d"], ["scores0"]),  # [0, -inf, ...]
        helper.make_node("Constant", [], ["zero_1d"], value=helper.make_tensor("zero_1d_t", I64, [1], [0])),
        helper.make_node("Concat", ["K_1d", "zero_1d"], ["seq_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["seq_shape"], ["seqs0"],
                         value=helper.make_tensor("seqs0_t", I64, [1], [0])),  # [K,0]
        helper.make_node("Unsqueeze", ["max_len", "zero_1d"], ["ml_1d"]),
        helper.make_node("ConstantOfShape", ["ml_1d"], ["best_seq0"], value=helper.make_tensor("bs0_t", I64, [1], [0])),
        helper.make_node("Loop", ["max_len", "true_b", "token", *state_in, "scores0", "seqs0", "zero_i", "ninf_d",
                                  "best_seq0", "zero_i", "zero_i"],
                         ["token_f", *[s + "_f" for s in state_in], "scores_f", "seqs_f", "n_fin_f", "best_f", "best",
                          "best_len", "steps"], body=body_graph),
    ]
    graph = helper.make_graph(
        main, "beam_loop",
        [*inputs, helper.make_tensor_value_info("max_len", I64, []),
         helper.make_tensor_value_info("length_penalty", D, [])],
        [helper.make_tensor_value_info("best", I64, ["L"]), helper.make_tensor_value_info("best_len", I64, []),
         helper.make_tensor_value_info("steps", I64, [])],
        list(dec.graph.initializer))
    model = helper.make_model(graph, opset_imports=list(dec.opset_import), ir_version=dec.ir_version)
    onnx.checker.check_model(model)
    return model
