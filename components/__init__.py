"""kfp v2 components: one per pipeline step, each a typed signature and one call into `scenerec.steps`.

The function bodies import `scenerec` themselves: kfp ships only a component's own source to the
container, which runs it with the one scenerec image (`components.image`).
"""
