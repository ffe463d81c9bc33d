from serving_runtime.fetch import main

raise SystemExit(main())
