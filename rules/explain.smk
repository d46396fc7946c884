# Stage 5b: explanations of every selected trained model (residual U-Net study, Section 6):
# its filters (Figure 2), Grad-CAM (Figure 6), LRP (Figure 7) and the LRP statistics.
from nucleiflow.paths import EXPLAIN_DIR, EXPLAIN_FIGURES, EXPLAIN_TABLE
from nucleiflow.workflow.explain import explain_settings

EXPLAIN_REPORTS = {
    name: report(
        f"{EXPLAIN_DIR}/{name}.png",
        caption=f"../report/explain_{name.split('_', 1)[1]}.rst",
        category="Explanations",
        subcategory="{experiment}",
        labels={"model": "{arch}/{encoder}/{reg}", "figure": name},
    )
    for name in EXPLAIN_FIGURES
}


rule explain:
    input:
        model=f"{MODEL_DIR}/model.pt",
        store=STORE,
        split=experiment_split,
    output:
        filters=EXPLAIN_REPORTS["figure2_filters"],
        gradcam=EXPLAIN_REPORTS["figure6_gradcam"],
        lrp=EXPLAIN_REPORTS["figure7_lrp"],
        table=report(
            f"{EXPLAIN_DIR}/{EXPLAIN_TABLE}.csv",
            caption="../report/explain_lrp_statistics.rst",
            category="Explanations",
            subcategory="{experiment}",
            labels={"model": "{arch}/{encoder}/{reg}", "table": EXPLAIN_TABLE},
        ),
        extra=[f"{EXPLAIN_DIR}/{name}.pdf" for name in EXPLAIN_FIGURES]
        + [f"{EXPLAIN_DIR}/{EXPLAIN_TABLE}{ext}" for ext in (".md", ".tex")],
    log:
        log_path("explain_{arch}_{encoder}_{reg}", SEG_DIR),
    benchmark:
        bench_path("explain_{arch}_{encoder}_{reg}", SEG_DIR)
    conda:
        "../envs/train.yaml"
    # LRP and Grad-CAM run on the CPU (zennit's hooks); a second thread bought 10 % on a demo job (11.0 s -> 9.9 s)
    # and kept another job off the other core, so one thread each lets explanations run side by side.
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        spec=model_spec,
        settings=lambda wc: explain_settings(config, wc.experiment, wc.arch, wc.encoder),
    script:
        "../scripts/explain.py"
