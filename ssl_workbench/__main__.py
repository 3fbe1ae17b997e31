from ssl_workbench.cli import main
raise SystemExit(main())
