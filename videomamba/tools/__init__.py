"""The command-line tools: ``videomamba`` (:mod:`.cli`) and what its commands run: :mod:`.predict` (classify
videos), :mod:`.extract` (features to files), :mod:`.search` (text-to-video search), :mod:`.web_demo` (the
browser demo) and :mod:`.model_source` (any checkpoint or model folder -> a ready model)."""
