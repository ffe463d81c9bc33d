from serving_runtime.tools.fetch import main

raise SystemExit(main())
